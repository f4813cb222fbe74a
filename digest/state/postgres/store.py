"""The store in PostgreSQL (psycopg 3): the same methods and promises as the TinyDB store.

How the TinyDB store's promises map here (:mod:`digest.state.store`, README "Delivery promises"):

- **Each accepted email is recorded before the next is sent**: :meth:`PostgresStore.record_note`
  commits the delivery's rows in a transaction of its own (the TinyDB store appends a journal line).
  The ledger's key ``(email, item_id)`` makes a second delivery of an item to an address a
  constraint, not a convention.
- **Fsynced in groups**: like the journal's grouped fsync, delivery transactions commit with
  ``synchronous_commit = off``: the commit is in the server when this returns (a crash or
  ``kill -9`` of digest loses nothing), and the server's WAL writer makes it durable within a few
  hundred milliseconds; every :meth:`PostgresStore.flush` (the cycle's checkpoints) commits
  synchronously, which makes every earlier commit durable too. A power cut of the database
  machine can forget the last fraction of a second of deliveries, and those emails are re-sent with
  the same Message-ID: the journal's promise, word for word.
- **People's changes** (subscribe, rules, unsubscribe, an import) commit synchronously, each call
  one transaction (an import all or nothing).
- **A read-only snapshot** (``writable=False``: a dry run, a preview) is one repeatable-read
  transaction rolled back at the end: what it changes is dropped, as the TinyDB snapshot's is.
- **One cycle at a time**: :meth:`PostgresStore.lock_cycle`, a session-level advisory lock, released
  when the connection ends (also when digest is killed).

Shared between threads like the TinyDB store (one connection, every public method under a lock).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb, set_json_dumps

from digest.errors import CycleLockedError, StoreUnavailableError, StoreWriteError
from digest.models import CycleReport, Item, SourceReport, Subscriber
from digest.settings import scrubbed
from digest.state import records
from digest.state.backend import redacted
from digest.state.departures import Departure, take_departures, take_kept_departures
from digest.state.postgres.schema import migrate
from digest.state.store import CYCLES_KEPT, VOTES_KEPT, DeferredSync, DeliveryNote, delivery_note

log = logging.getLogger(__name__)

CYCLE_LOCK = 0x64696765_7374_0002  # pg_advisory_lock key of "a cycle is running"
CONNECT_TIMEOUT_SECONDS = 10
PROGRESS_BATCH = 2000  # subscribers read and written at a time by record_progress (in its one transaction)

Row = tuple[Any, ...]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[Concatenate[PostgresStore, _P], _R]) -> Callable[Concatenate[PostgresStore, _P], _R]:
    """One thread at a time on the connection (``digest serve`` shares a store between threads)."""

    def locked(self: PostgresStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except psycopg.OperationalError as exc:  # the server went away, a disk filled up there
                raise StoreWriteError(f"the PostgreSQL store {self.where}: {first_line(exc)}") from None

    locked.__name__, locked.__qualname__, locked.__doc__ = method.__name__, method.__qualname__, method.__doc__
    return locked


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")  # an escaped NUL, not an escaped backslash + "u0000"


def storable_json(value: Any) -> str:
    """JSON as ``jsonb`` takes it: without NUL characters, which it cannot hold. Fetched papers lose
    them on the way in (:mod:`digest.sources.keepable`); this is for what came in before, through a
    TinyDB store that ``migrate-store`` copies."""
    text = json.dumps(value)
    return _JSON_NUL.sub(r"\1", text) if "\\u0000" in text else text


# TCP keepalives, so that a connection to a server that is gone without a word (a host powered
# off, a network cut: no reset ever comes) fails within about a minute instead of
# hanging a worker or a page's thread until the kernel gives up (up to hours). Values in the
# store's URL win (``?keepalives_idle=300``).
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",  # ms a sent packet may go unacknowledged
}


def connection_options(url: str) -> dict[str, Any]:
    """``psycopg.connect``'s options for ``url``: the connect timeout and the keepalives it does not set."""
    given = conninfo_to_dict(url)
    options: dict[str, Any] = {k: v for k, v in KEEPALIVES.items() if k not in given}
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return options


# A warning the server sends again (the queue's ANALYZE, once per slice of a cycle) is logged once
# in this long; and a skip for a lock taken (autovacuum's, SKIP_LOCKED) is meant, not worth a line.
WARNING_REPEAT_SECONDS = 3600.0
LOCK_NOT_AVAILABLE = "55P03"
_warned_at: dict[str, float] = {}


def log_server_warning(notice: psycopg.errors.Diagnostic) -> None:
    """A warning the server sends with a statement's success, logged: psycopg shows none. Such as
    the queue's ``ANALYZE`` skipped for a role that does not own the table, which leaves every
    claim of the cycle reading the whole queue (:func:`digest.state.postgres.queue.enqueue`).
    Notices (``… already exists, skipping``) are not worth a line."""
    if notice.severity_nonlocalized != "WARNING" or notice.sqlstate == LOCK_NOT_AVAILABLE:
        return
    message = notice.message_primary or ""
    now, last = time.monotonic(), _warned_at.get(message)
    if last is not None and now - last < WARNING_REPEAT_SECONDS:
        return
    _warned_at[message] = now
    hint = f" ({notice.message_hint})" if notice.message_hint else ""
    log.warning("PostgreSQL warns: %s%s", message, hint)


def connect(url: str, autocommit: bool = True) -> psycopg.Connection[Row]:
    """A connection with digest's session settings (UTC, read committed, :func:`storable_json`,
    :data:`KEEPALIVES`), or a :class:`StoreError` naming the server."""
    try:
        connection = psycopg.connect(url, autocommit=autocommit, **connection_options(url))
    except psycopg.Error as exc:
        raise StoreUnavailableError(
            f"cannot connect to the PostgreSQL store {redacted(url)}: {scrubbed(first_line(exc), url)}"
        ) from None
    set_json_dumps(storable_json, connection)
    connection.add_notice_handler(log_server_warning)
    connection.execute("SET TIME ZONE 'UTC'")
    # A read after a lock sees what the lock waited for (READ COMMITTED), whatever the server's
    # default says: under repeatable read, a change that waited for a send would fail on its row.
    connection.execute("SET default_transaction_isolation = 'read committed'")
    if not autocommit:
        connection.commit()
    return connection


class PostgresStore:
    """All state digest keeps, in PostgreSQL tables (:mod:`digest.state.postgres.schema`)."""

    def __init__(self, url: str, data_dir: Path | None = None, writable: bool = True) -> None:
        self._lock = threading.RLock()
        self.url = url
        self.where = redacted(url)
        self.data_dir = data_dir
        self.writable = writable
        self._async_commits = 0  # delivery commits since the last synchronous one
        self._lock_reads = False  # in a person's change (:meth:`locking_reads`): their row read FOR UPDATE
        self._cycle_locked = False
        self.connection = connect(url, autocommit=True)
        try:
            migrate(self.connection, self.where)
        except BaseException:
            self.connection.close()
            raise
        if not writable:  # one snapshot, rolled back at the end: see the module docstring
            self.connection.autocommit = False
            self.connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self.connection.execute("SELECT 1")

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[psycopg.Connection[Row]]:
        """One transaction (a savepoint in a snapshot). Not ``durable``: committed asynchronously."""
        with self.connection.transaction():
            if not durable and self.writable:
                self.connection.execute("SET LOCAL synchronous_commit = off")
            yield self.connection
        if not durable:
            self._async_commits += 1

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Row]]:
        """One transaction around several calls (a worker's claim, send and record: the store's own
        methods become savepoints in it), this thread alone on the connection meanwhile."""
        with self._lock, self.connection.transaction():
            yield self.connection

    @contextmanager
    def locking_reads(self) -> Iterator[None]:
        """Inside a transaction: :meth:`subscriber` locks the row it reads until the commit. A change
        that reads a person and writes them back (a manage save) then waits for anyone changing or
        removing them (an unsubscribe, a worker sending to them) and reads what they left: without
        it, a save that read the row before an unsubscribe deleted it would write the person back."""
        self._lock_reads = True
        try:
            yield
        finally:
            self._lock_reads = False

    def _one(self, query: str, params: Iterable[Any] = ()) -> Row | None:
        return self.connection.execute(query.encode(), tuple(params)).fetchone()

    def _all(self, query: str, params: Iterable[Any] = ()) -> list[Row]:
        return self.connection.execute(query.encode(), tuple(params)).fetchall()

    # -- locks and lifetime -------------------------------------------------------------------
    def lock_cycle(self, wait_seconds: float, stop: threading.Event | None = None) -> None:
        """Take the cycle lock (one cycle at a time, across processes and machines) or raise
        :class:`CycleLockedError` after ``wait_seconds`` (or once ``stop`` is set)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            with self._lock:
                row = self._one("SELECT pg_try_advisory_lock(%s)", (CYCLE_LOCK,))
            if row and row[0]:
                self._cycle_locked = True
                return
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise CycleLockedError(
                    f"the store {self.where} is busy (a digest cycle is probably running elsewhere); "
                    "try again when it has finished"
                )
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    @_locked
    def flush(self) -> None:
        """Fold pending unsubscribes in, and make every delivery committed so far durable (one
        synchronous commit covers all the asynchronous ones before it)."""
        if not self.writable:
            return
        self.take_departures()
        if self._async_commits:
            with self._transaction():
                self.connection.execute(
                    "INSERT INTO meta VALUES ('flushed_at', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (datetime.now(UTC).isoformat(),),
                )
            self._async_commits = 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.close_connection()

    def close_connection(self, wait: bool = True) -> None:
        """End the session: a snapshot's changes are rolled back, the cycle lock released. Not
        ``wait``: left open if another thread is using it (it may wait for a server that hangs)."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if not self.connection.closed:
                if not self.writable:
                    self.connection.rollback()
                if self._cycle_locked:  # now, not when the server notices the session ended
                    with contextlib.suppress(psycopg.Error):
                        self.connection.execute("SELECT pg_advisory_unlock(%s)", (CYCLE_LOCK,))
                    self._cycle_locked = False
                self.connection.close()
        finally:
            self._lock.release()

    # -- meta ---------------------------------------------------------------------------------
    @property
    @_locked
    def prune_horizon(self) -> date | None:
        row = self._one("SELECT value FROM meta WHERE key = 'prune_horizon'")
        return date.fromisoformat(row[0]) if row and row[0] else None

    # -- items --------------------------------------------------------------------------------
    @_locked
    def upsert_items(self, items: Iterable[Item], now: datetime) -> list[Item]:
        """Remember fetched items; return the ones never seen before (see the TinyDB store)."""
        batch = list(items)
        ids = [item.id for item in batch]
        stamp = now.isoformat()
        horizon = self.prune_horizon or date.min
        with self._transaction() as connection:
            rows = self._all("SELECT id, listed_on FROM seen WHERE id = ANY(%s)", (ids,))
            seen: dict[str, str] = {row[0]: row[1].isoformat() for row in rows}
            stored: dict[str, str | None] = {
                row[0]: row[1]
                for row in self._all("SELECT id, record->>'first_seen' FROM items WHERE id = ANY(%s)", (ids,))
            }
            new: list[Item] = []
            first_seen: list[tuple[str, str]] = []
            records: dict[str, dict[str, Any]] = {}
            for item in batch:
                first = seen.get(item.id)
                record = item.to_record()
                if first is None:
                    seen[item.id] = item.listed_on.isoformat()
                    first_seen.append((item.id, item.listed_on.isoformat()))
                    new.append(item)
                    record["first_seen"] = stamp
                else:
                    record["listed_on"] = first
                    record["first_seen"] = stored.get(item.id) or stamp
                record["last_seen"] = stamp
                if first is None or item.id in stored or item.id in records or date.fromisoformat(first) >= horizon:
                    records[item.id] = record
                    stored.setdefault(item.id, record["first_seen"])
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO seen (id, listed_on) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING", first_seen
                )
                cursor.executemany(
                    "INSERT INTO items (id, listed_on, record) VALUES (%s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET listed_on = excluded.listed_on, record = excluded.record",
                    [(key, record["listed_on"], Jsonb(record)) for key, record in records.items()],
                )
        return new

    @_locked
    def items_listed_between(self, start: date, end: date) -> list[Item]:
        rows = self._all(
            "SELECT i.record FROM items i JOIN seen s ON s.id = i.id WHERE i.listed_on BETWEEN %s AND %s ORDER BY s.n",
            (start, end),
        )
        return [Item.from_record(row[0]) for row in rows]

    @_locked
    def item(self, item_id: str) -> Item | None:
        row = self._one("SELECT record FROM items WHERE id = %s", (item_id,))
        return Item.from_record(row[0]) if row else None

    @_locked
    def items(self, item_ids: Iterable[str]) -> list[Item]:
        """The stored papers among ``item_ids``, in that order: one query, not one per paper."""
        wanted = list(dict.fromkeys(item_ids))
        rows = self._all("SELECT id, record FROM items WHERE id = ANY(%s)", (wanted,))
        found = {str(key): Item.from_record(record) for key, record in rows}
        return [found[key] for key in wanted if key in found]

    @property
    @_locked
    def seen_count(self) -> int:
        row = self._one("SELECT count(*) FROM seen")
        return int(row[0]) if row else 0

    @_locked
    def prune(self, horizon: date) -> None:
        """Drop deliveries and item records listed before ``horizon`` (monotonic): items listed before
        it are never candidates again (:meth:`candidate_floor`), so nothing can be delivered twice."""
        current = self.prune_horizon
        if current is not None and horizon <= current:
            return
        with self._transaction() as connection:
            connection.execute("DELETE FROM deliveries WHERE listed_on < %s", (horizon,))
            connection.execute("DELETE FROM items WHERE listed_on < %s", (horizon,))
            connection.execute(
                "INSERT INTO meta VALUES ('prune_horizon', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (horizon.isoformat(),),
            )

    @_locked
    def candidate_floor(self) -> date:
        return self.prune_horizon or date.min

    # -- subscribers --------------------------------------------------------------------------
    @_locked
    def subscribers(self, active_only: bool = False) -> list[Subscriber]:
        """Everyone, in subscription order. Streamed and made into records row by row: the JSON
        records of 100,000 people parsed at once took ≈ 190 MB (``bench/postgres.md``)."""
        people = []
        with self.connection.cursor() as cursor:
            for (record,) in cursor.stream(b"SELECT record FROM subscribers ORDER BY n"):
                person = Subscriber.from_record(record)
                if person.active or not active_only:
                    people.append(person)
        return people

    @_locked
    def subscriber(self, email: str) -> Subscriber | None:
        lock = " FOR UPDATE" if self._lock_reads else ""
        row = self._one("SELECT record FROM subscribers WHERE email = %s" + lock, (email.lower(),))
        return Subscriber.from_record(row[0]) if row else None

    def save_subscriber(self, subscriber: Subscriber) -> None:
        self.save_subscribers([subscriber])

    @_locked
    def save_subscribers(self, subscribers: Iterable[Subscriber]) -> None:
        """People's changes, committed (synchronously, all or nothing) before this returns."""
        rows = [(s.email.lower(), Jsonb(s.to_record())) for s in subscribers]
        with self._transaction() as connection, connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO subscribers (email, record) VALUES (%s, %s) "
                "ON CONFLICT (email) DO UPDATE SET record = excluded.record",
                rows,
            )

    @_locked
    def record_progress(self, subscribers: Iterable[Subscriber]) -> None:
        """Only ``caught_up_to`` and ``last_delivery_at`` of each *current* record change: rules,
        pauses and removals made while the cycle sent are kept, and nobody who left comes back."""
        progress = {s.email.lower(): s for s in subscribers}
        if not progress:
            return
        keys = list(progress)
        with self._transaction() as connection:
            for at in range(0, len(keys), PROGRESS_BATCH):  # a first cycle moves everyone: not all at once
                rows = self._all(
                    "SELECT email, record FROM subscribers WHERE email = ANY(%s) FOR UPDATE",
                    (keys[at : at + PROGRESS_BATCH],),
                )
                updates: dict[str, dict[str, Any]] = {}
                for key, record in rows:
                    current = Subscriber.from_record(record)
                    mine = progress[key]
                    handled = max((t for t in (current.handled_at, mine.handled_at) if t is not None), default=None)
                    changed = replace(
                        current,
                        caught_up_to=mine.caught_up_to,
                        last_delivery_at=mine.last_delivery_at,
                        handled_at=handled,
                    )
                    if changed != current:
                        updates[key] = changed.to_record()
                if updates:  # one statement, one JSON object {email: record} (executemany: a round trip a row)
                    connection.execute(
                        "UPDATE subscribers s SET record = u.value FROM jsonb_each(%s) AS u WHERE s.email = u.key",
                        (Jsonb(updates),),
                    )

    @_locked
    def remove_subscriber(self, email: str) -> bool:
        """Forget the subscriber but keep their deliveries, so re-subscribing never re-sends an item;
        the time goes to ``departures`` (kills confirm links sent before it)."""
        key = email.lower()
        with self._transaction() as connection:
            gone = connection.execute("DELETE FROM subscribers WHERE email = %s", (key,)).rowcount
            self._note_departure(key, datetime.now(UTC))
        return bool(gone)

    # -- votes -------------------------------------------------------------------------------
    @_locked
    def record_vote(self, email: str, paper: str, vote: int, at: datetime) -> bool:
        """As :meth:`digest.state.store.Store.record_vote`: the latest vote per person and paper, at
        most ``VOTES_KEPT`` per person; the rows go with the subscriber's (``ON DELETE CASCADE``)."""
        key = email.lower()
        if vote not in (1, -1) or not paper:
            return False
        with self._transaction() as connection:
            if self._one("SELECT 1 FROM subscribers WHERE email = %s FOR SHARE", (key,)) is None:
                return False
            connection.execute(
                "INSERT INTO votes VALUES (%s, %s, %s, %s) ON CONFLICT (email, paper) DO UPDATE "
                "SET vote = excluded.vote, at = excluded.at WHERE votes.vote <> excluded.vote",
                (key, paper, vote, at),
            )
            connection.execute(
                "DELETE FROM votes WHERE email = %s AND paper IN "
                "(SELECT paper FROM votes WHERE email = %s ORDER BY at DESC, paper OFFSET %s)",
                (key, key, VOTES_KEPT),
            )
        return True

    @_locked
    def votes(self, email: str) -> dict[str, int]:
        """``email``'s votes: paper id → +1 or -1, oldest first."""
        rows = self._all("SELECT paper, vote FROM votes WHERE email = %s ORDER BY at, paper", (email.lower(),))
        return {str(paper): int(vote) for paper, vote in rows}

    @_locked
    def forget_departed(self, email: str, at: str) -> None:
        """Apply an unsubscribe taken elsewhere at ``at``; a subscription made after it is kept."""
        key = email.lower()
        when = datetime.fromisoformat(at)
        with self._transaction() as connection:
            row = self._one("SELECT record FROM subscribers WHERE email = %s FOR UPDATE", (key,))
            since = Subscriber.from_record(row[0]).subscribed_at if row else None
            if row is not None and (since is None or since.tzinfo is None or when.tzinfo is None or since <= when):
                connection.execute("DELETE FROM subscribers WHERE email = %s", (key,))
            self._note_departure(key, when if when.tzinfo else when.replace(tzinfo=UTC))

    def _note_departure(self, key: str, at: datetime) -> None:
        self.connection.execute(
            "INSERT INTO departures VALUES (%s, %s) "
            "ON CONFLICT (email) DO UPDATE SET at = greatest(departures.at, excluded.at)",
            (key, at),
        )

    @_locked
    def take_departures(self) -> int:
        """Unsubscribes another process left in ``data_dir/unsubscribes.pending``, and those a web
        front kept while the database did not answer (``unsubscribes.kept``; see
        :mod:`digest.state.departures`): applied here. The PostgreSQL store itself needs no such file."""
        if not self.writable or self.data_dir is None:
            return 0
        taken = take_departures(self.data_dir, self._fold_departures)
        return taken + take_kept_departures(self.data_dir, self._fold_departures)

    def _fold_departures(self, departures: list[Departure]) -> None:
        for email, at in departures:
            self.forget_departed(email, at)

    @_locked
    def departed_at(self, email: str) -> datetime | None:
        row = self._one("SELECT at FROM departures WHERE email = %s", (email.lower(),))
        return row[0] if row else None

    @_locked
    def departed_count(self) -> int:
        row = self._one(
            "SELECT count(*) FROM departures d WHERE NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = d.email)"
        )
        return int(row[0]) if row else 0

    # -- delivery ledger ----------------------------------------------------------------------
    @_locked
    def delivered_ids(self, email: str, since: date | None = None) -> set[str]:
        """Ids delivered to ``email``; with ``since``, only among items listed on or after it."""
        rows = self._all(
            "SELECT item_id FROM deliveries WHERE email = %s AND listed_on >= %s", (email.lower(), since or date.min)
        )
        return {row[0] for row in rows}

    @_locked
    def delivered_to(self, emails: Sequence[str], since: date) -> dict[str, set[str]]:
        """:meth:`delivered_ids` of several people in one query (a slice of the scheduler's plan:
        a query per person was 100,000 round trips a cycle)."""
        found: dict[str, set[str]] = {email.lower(): set() for email in emails}
        rows = self._all(
            "SELECT email, item_id FROM deliveries WHERE email = ANY(%s) AND listed_on >= %s", (list(found), since)
        )
        for email, item_id in rows:
            found[email].add(item_id)
        return found

    def delivery_note(self, email: str, items: Iterable[Item], digest_id: str) -> DeliveryNote:
        """Pure (no query): it may run in the render process, which must not use this connection."""
        return delivery_note(email, items, digest_id)

    @_locked
    def record_note(self, note: DeliveryNote, at: datetime) -> None:
        """Commit that ``note.email`` has ``note.items``, right after the SMTP server accepted them: one
        transaction per email, asynchronous commit (see the module docstring)."""
        digest_id = json.loads(note.journal_head + "null}").get("digest")
        with self._transaction(durable=False) as connection:
            connection.execute(  # the items as one JSON object {id: day}: arrays are dumped value by value
                "WITH u AS (SELECT key AS i, value::date AS d FROM jsonb_each_text(%s)), "
                "new AS (INSERT INTO seen (id, listed_on) SELECT i, d FROM u ON CONFLICT (id) DO NOTHING) "
                "INSERT INTO deliveries (email, item_id, listed_on, digest_id, at) "
                "SELECT %s, i, d, %s, %s FROM u "
                "ON CONFLICT (email, item_id) DO NOTHING",
                (Jsonb(dict(note.items)), note.email, digest_id, at),
            )

    @contextmanager
    def deferred_sync(self) -> Iterator[DeferredSync]:
        """Nothing to defer: a person's change is committed by the server, not fsynced here."""
        yield DeferredSync()

    def sync_through(self, appended: int) -> None:
        return None

    # -- sources ------------------------------------------------------------------------------
    def _source_record(self, source: str) -> dict[str, Any]:
        row = self._one("SELECT record FROM sources WHERE name = %s", (source,))
        return dict(row[0]) if row else {"name": source, "failed_days": []}

    def _save_source(self, record: dict[str, Any]) -> None:
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO sources VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                (record["name"], Jsonb(record)),
            )

    @_locked
    def source_states(self) -> list[dict[str, Any]]:
        return [dict(row[0]) for row in self._all("SELECT record FROM sources ORDER BY name")]

    @_locked
    def failed_days(self, source: str) -> list[date]:
        return [date.fromisoformat(d) for d in self._source_record(source).get("failed_days", [])]

    @_locked
    def fetched_through(self, source: str) -> date | None:
        return records.fetched_through(self._source_record(source))

    @_locked
    def record_source(
        self,
        report: SourceReport,
        days_failed: Iterable[date],
        at: datetime,
        as_of: date | None = None,
        fetched_through: date | None = None,
        caught_up: tuple[date, date] | None = None,
        lost: Iterable[tuple[date, date, str]] = (),
    ) -> None:
        """As :meth:`digest.state.store.Store.record_source`, the same record."""
        state = records.after_fetch(
            self._source_record(report.name), report, days_failed, at, as_of, fetched_through, caught_up, lost
        )
        self._save_source(state)

    @_locked
    def source_state(self, source: str) -> dict[str, Any]:
        return dict(self._source_record(source).get("http", {}))

    @_locked
    def set_source_state(self, source: str, state: dict[str, Any]) -> None:
        record = self._source_record(source)
        record["http"] = dict(state)
        self._save_source(record)

    # -- delivery failures --------------------------------------------------------------------
    @_locked
    def record_failure(self, email: str, reason: str, at: datetime, permanent: bool) -> None:
        key = email.lower()
        with self._transaction() as connection:
            row = self._one("SELECT record FROM failures WHERE email = %s FOR UPDATE", (key,))
            record = records.failure(key, reason, at, permanent, row[0] if row else None)
            connection.execute(
                "INSERT INTO failures VALUES (%s, %s) ON CONFLICT (email) DO UPDATE SET record = excluded.record",
                (key, Jsonb(record)),
            )

    @_locked
    def clear_failure(self, email: str) -> None:
        self.connection.execute("DELETE FROM failures WHERE email = %s", (email.lower(),))

    @_locked
    def failures(self) -> list[dict[str, Any]]:
        return [dict(row[0]) for row in self._all("SELECT record FROM failures ORDER BY email")]

    # -- cycles -------------------------------------------------------------------------------
    @_locked
    def record_cycle(self, report: CycleReport) -> None:
        with self._transaction() as connection:
            connection.execute("INSERT INTO cycles (record) VALUES (%s)", (Jsonb(report.to_record()),))
            connection.execute(
                "DELETE FROM cycles WHERE id NOT IN (SELECT id FROM cycles ORDER BY id DESC LIMIT %s)", (CYCLES_KEPT,)
            )

    @_locked
    def cycles(self, last: int = 10) -> list[dict[str, Any]]:
        rows = self._all("SELECT record FROM cycles ORDER BY id DESC LIMIT %s", (max(0, last),))
        return [dict(row[0]) for row in reversed(rows)]
