"""The web's most frequent statements, run on the event loop (``psycopg.AsyncConnection``).

A signed link's page reads one person (and, for the manage page, their votes), and the one-click
unsubscribe removes them: most of what the web front does on a PostgreSQL store. Through
:class:`~digest.state.postgres.keeper.PostgresKeeper` each was a hop to a worker thread and several
round trips, and each reply waited for that thread to get the GIL back from the event loop. Here
each is one statement awaited on the loop: at 20 clients, 2,000 subscribers, the web's CPU per
request went 1.5–1.8 → 0.8 ms and the manage page's p99 150–180 → 35 ms (``bench/postgres.md``).
Every other read and change still goes through the keeper.

Connections are opened when first needed and kept for the event loop that opened them: up to
:data:`CONNECTIONS` for reads and as many for unsubscribes, so one-clicks that wait for a send in
progress to their person never hold up a page. One whose statement failed or was cancelled is
closed, never lent again; if the server had dropped it, the statement is tried once more on a new
one (each is idempotent: a second ``LEAVE`` finds the person gone and writes nothing). An
unsubscribe, once asked, runs to its commit even if its request is cancelled meanwhile.

Each call answers within ``answer_seconds`` (:data:`digest.state.postgres.keeper.ANSWER_SECONDS`)
or raises :class:`~digest.errors.StoreUnavailableError`: a server that hangs without answering
costs a person a "try again" page, not a request that never ends. An unsubscribe past that bound
still runs to its commit when the server answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg

from digest.errors import StoreUnavailableError
from digest.models import Subscriber
from digest.settings import scrubbed
from digest.state.answer import within
from digest.state.backend import redacted
from digest.state.postgres.store import connection_options, first_line, log_server_warning

T = TypeVar("T")

CONNECTIONS = 4
READS, LEAVES = "reads", "leaves"

SUBSCRIBER = "SELECT record FROM subscribers WHERE email = %(email)s"

PERSON = (
    "SELECT s.record, (SELECT coalesce(jsonb_agg(jsonb_build_array(v.paper, v.vote) ORDER BY v.at, v.paper), '[]')"
    " FROM votes v WHERE v.email = s.email) FROM subscribers s WHERE s.email = %(email)s"
)

# digest.state.backend.leave in one statement. The DELETE waits for a worker sending to them (its
# FOR UPDATE). Someone removed notes their departure (which kills confirm links sent before it);
# someone who was not there is noted only if they never left (DO NOTHING, not a snapshot's NOT
# EXISTS: a replay racing the first one-click must write nothing either).
LEAVE = (
    "WITH gone AS (DELETE FROM subscribers WHERE email = %(email)s RETURNING email),"
    " left_now AS (INSERT INTO departures SELECT email, %(at)s FROM gone"
    " ON CONFLICT (email) DO UPDATE SET at = greatest(departures.at, excluded.at) RETURNING 1),"
    " never_left AS (INSERT INTO departures SELECT %(email)s, %(at)s WHERE NOT EXISTS (SELECT 1 FROM gone)"
    " ON CONFLICT (email) DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM left_now) + (SELECT count(*) FROM never_left)"
)


class LoopQueries:
    """Satisfies :class:`digest.state.backend.LoopQueries` on a PostgreSQL store.

    ``prepare`` runs once, in a worker thread, before the first connection: the keeper's sync store
    brings the schema up to date (:func:`digest.state.postgres.schema.migrate`).
    """

    def __init__(
        self, url: str, prepare: Callable[[], None], connections: int = CONNECTIONS, answer_seconds: float = 15.0
    ) -> None:
        self.url, self.where = url, redacted(url)
        self.answer_seconds = answer_seconds
        self._prepare: Callable[[], None] | None = prepare
        self._preparing: asyncio.Future[None] | None = None  # see _prepared
        self._connections = connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = {READS: asyncio.Semaphore(connections), LEAVES: asyncio.Semaphore(connections)}
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._all: list[psycopg.AsyncConnection[Any]] = []

    async def subscriber(self, email: str) -> Subscriber | None:
        row = await self._answer(self._one(READS, SUBSCRIBER, {"email": email.lower()}))
        return Subscriber.from_record(row[0]) if row else None

    async def subscriber_with_votes(self, email: str) -> tuple[Subscriber | None, dict[str, int]]:
        """The person ``email`` names (None: not subscribed) and their votes, oldest first."""
        row = await self._answer(self._one(READS, PERSON, {"email": email.lower()}))
        if row is None:
            return None, {}
        return Subscriber.from_record(row[0]), {str(paper): int(vote) for paper, vote in row[1]}

    async def leave(self, email: str) -> bool:
        """:func:`digest.state.backend.leave`: committed (synchronously) before this returns; True
        if they were subscribed. Shielded: a request cancelled while this waits for a send to the
        person (a shutdown), or past ``answer_seconds``, does not undo the unsubscribe it asked for."""
        params = {"email": email.lower(), "at": datetime.now(UTC)}
        row = await self._answer(asyncio.shield(self._one(LEAVES, LEAVE, params)), cancel=False)
        return bool(row and row[0])

    async def _answer(self, call: Awaitable[T], cancel: bool = True) -> T:
        """``call``'s answer, or a :class:`~digest.errors.StoreUnavailableError` once the server has
        taken ``answer_seconds`` (:func:`digest.state.answer.within`: a read is cancelled, its
        connection dropped when psycopg is done with it; an unsubscribe goes on)."""
        return await within(call, self.answer_seconds, f"the PostgreSQL store {self.where}", cancel)

    async def _one(self, kind: str, query: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        for attempt in (1, 2):
            async with self._slots_here()[kind]:
                connection = await self._borrow()
                try:
                    cursor = await connection.execute(query.encode(), params)
                    row = await cursor.fetchone()
                except BaseException as exc:
                    dropped_by_the_server = connection.broken
                    # never lent again in an unknown state (a statement cancelled in flight, an error)
                    self._drop(connection)
                    if attempt == 1 and isinstance(exc, psycopg.OperationalError) and dropped_by_the_server:
                        continue  # the server dropped it: once more, on a new one
                    if isinstance(exc, psycopg.Error):  # a shutdown, a server-side timeout: try again later
                        raise StoreUnavailableError(f"the PostgreSQL store {self.where}: {first_line(exc)}") from None
                    raise
                self._give_back(connection)
                return row
        raise AssertionError("unreachable")

    def _slots_here(self) -> dict[str, asyncio.Semaphore]:
        """The slots of the running loop: connections belong to the loop that opened them (a test
        may serve the same app twice, each time on a new loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()
            self._loop, self._preparing = loop, None
            self._slots = {kind: asyncio.Semaphore(self._connections) for kind in (READS, LEAVES)}
        return self._slots

    async def _borrow(self) -> psycopg.AsyncConnection[Any]:
        if self._idle:
            return self._idle.pop()
        if self._prepare is not None:
            await self._prepared()
        try:
            connection = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, **connection_options(self.url)
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL store {self.where}: {scrubbed(first_line(exc), self.url)}"
            ) from None
        connection.add_notice_handler(log_server_warning)
        try:  # the default whatever the server's: under repeatable read, a one-click that waited for a
            # send would fail on the row the send changed
            await connection.execute("SET default_transaction_isolation = 'read committed'")
        except BaseException as exc:
            connection.pgconn.finish()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailableError(f"the PostgreSQL store {self.where}: {first_line(exc)}") from None
            raise
        self._all.append(connection)
        return connection

    async def _prepared(self) -> None:
        """``prepare`` once, in a thread, however many requests wait for it meanwhile (one whose
        wait ends at its bound leaves it running for the next, not a second one)."""
        if self._preparing is None:
            preparing = self._preparing = asyncio.get_running_loop().run_in_executor(None, self._prepare_once)
            preparing.add_done_callback(self._forget_failed)
        try:
            await asyncio.shield(self._preparing)
        except psycopg.Error as exc:  # migrate's or connect's: the server is away or refused
            raise StoreUnavailableError(f"the PostgreSQL store {self.where}: {first_line(exc)}") from None

    def _forget_failed(self, preparing: asyncio.Future[None]) -> None:
        """A preparation that failed is tried again by the next request, whoever waited for it."""
        if self._preparing is preparing and (preparing.cancelled() or preparing.exception() is not None):
            self._preparing = None

    def _prepare_once(self) -> None:
        if self._prepare is not None:
            self._prepare()
            self._prepare = None

    def _give_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if connection in self._all:
            self._idle.append(connection)
        else:  # closed meanwhile (close(), a new loop)
            self._drop(connection)

    def _drop(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if connection in self._all:
            self._all.remove(connection)
        if not connection.closed:
            connection.pgconn.finish()

    def close(self) -> None:
        """Close every connection (from any thread: closing one does no I/O on the loop)."""
        connections, self._all, self._idle = self._all, [], []
        for connection in connections:
            connection.pgconn.finish()
