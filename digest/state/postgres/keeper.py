"""The web front's way to a PostgreSQL store (``digest web``, any number of replicas).

The TinyDB keeper (:mod:`digest.state.keeper`) holds one store in memory and one writer thread,
because the store is one file. Here the database is the shared state: every page reads from it
and every change is one transaction of its own, committed before it is answered, so replicas on
any number of machines see each other's changes at once. A few connections per process
(:data:`CONNECTIONS`), lent to one call at a time; a connection the server dropped is replaced.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from digest.errors import StoreUnavailableError
from digest.state.backend import StoreBackend, redacted
from digest.state.postgres.loop_queries import LoopQueries
from digest.state.postgres.store import PostgresStore

T = TypeVar("T")

CONNECTIONS = 4
# How long a web request waits for the database before it answers "try again" (503): a server
# that hangs without answering must not hold a page, a one-click or /healthz for ever.
ANSWER_SECONDS = 15.0


class PostgresKeeper:
    """Satisfies :class:`digest.state.backend.Keeper` on a PostgreSQL store."""

    def __init__(self, url: str, data_dir: Path | None = None, connections: int = CONNECTIONS) -> None:
        self.url, self.data_dir = url, data_dir
        self._idle: queue.LifoQueue[PostgresStore] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(connections)
        self._all: list[PostgresStore] = []
        self._guard = threading.Lock()
        self._writes = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="store-write")
        self._shared: PostgresStore | None = None
        self.answer_seconds: float | None = ANSWER_SECONDS
        self._closed = False
        # the manage page's read and the one-click, on the event loop (see that module)
        self.loop_queries = LoopQueries(
            url, prepare=lambda: self.read(lambda store: None), connections=connections, answer_seconds=ANSWER_SECONDS
        )

    @contextmanager
    def _borrowed(self) -> Iterator[PostgresStore]:
        # A slot, or an error once ANSWER_SECONDS have passed: calls a hung server never answers
        # keep theirs, and a thread must not wait for one for ever.
        if not self._slots.acquire(timeout=self.answer_seconds):
            raise StoreUnavailableError(f"the PostgreSQL store {redacted(self.url)} did not answer the calls before")
        try:
            try:
                store = self._idle.get_nowait()
            except queue.Empty:
                store = PostgresStore(self.url, data_dir=self.data_dir)
                with self._guard:
                    self._all.append(store)
            try:
                yield store
            finally:
                if store.connection.closed or store.connection.broken:
                    with self._guard:
                        if store in self._all:
                            self._all.remove(store)
                elif self._closed:  # the keeper closed while this call waited: close it now
                    store.close_connection()
                else:
                    self._idle.put(store)
        finally:
            self._slots.release()

    def read(self, fn: Callable[[StoreBackend], T]) -> T:
        """``fn`` on a connection of its own (blocking: call it from a worker thread)."""
        with self._borrowed() as store:
            return fn(store)

    def read_now(self, fn: Callable[[StoreBackend], T]) -> tuple[bool, T | None]:
        """Never at once: every read is a query, so it runs in a worker thread (:meth:`read`)."""
        return False, None

    def store(self) -> StoreBackend:
        """One connection shared by callers that make single calls (each call takes its lock)."""
        with self._guard:
            if self._shared is None or self._shared.connection.closed or self._shared.connection.broken:
                self._shared = PostgresStore(self.url, data_dir=self.data_dir)
                self._all.append(self._shared)
            return self._shared

    def write(self, fn: Callable[[StoreBackend], T]) -> T:
        """A person's change: ``fn``'s calls in one transaction, committed before this returns; the
        person's row locked from the moment ``fn`` reads it (:meth:`PostgresStore.locking_reads`)."""
        with self._borrowed() as store, store.transaction(), store.locking_reads():
            return fn(store)

    def submit(self, fn: Callable[[StoreBackend], T], departure: str | None = None) -> Future[T]:
        """:meth:`write` in a writer thread (``asyncio.wrap_future`` it in a handler)."""
        return self._writes.submit(self.write, fn)

    def close(self) -> None:
        """Close every connection not in use. Writes still queued are dropped (their requests got
        "try again" or are gone), and one still waiting for a database that hangs keeps its
        connection, and its thread, until the server answers: never waited for here."""
        self._closed = True
        self._writes.shutdown(wait=False, cancel_futures=True)
        self.loop_queries.close()
        with self._guard:
            stores, self._all, self._shared = list(self._all), [], None
        for store in stores:
            with contextlib.suppress(Exception):
                store.close_connection(wait=False)
