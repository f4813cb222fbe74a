"""The store as the rest of digest uses it, whichever backend keeps it; and which backend, from ``store.url``.

Two backends implement :class:`StoreBackend`:

- ``tinydb:`` (the default): :class:`digest.state.store.Store`, one JSON file in ``data_dir`` with
  its delivery journal. One writer at a time (a file lock).
- ``postgresql://…``: :class:`digest.state.postgres.store.PostgresStore`, tables in a PostgreSQL
  database (psycopg 3); the delivery ledger's ``(subscriber, item)`` key is a constraint, and each
  accepted email is committed in its own transaction.

The promises (``README.md``, "Delivery promises") are the same for both; ``tests/test_store_postgres.py``
runs the same scenarios against each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from digest.errors import SettingsError
from digest.models import CycleReport, Item, SourceReport, Subscriber
from digest.settings import redacted, store_kind
from digest.state.store import DeferredSync, DeliveryNote

__all__ = ["Keeper", "LoopQueries", "StoreBackend", "is_postgres", "leave", "open_backend", "redacted", "store_kind"]

T = TypeVar("T")


class StoreBackend(Protocol):
    """Every method digest's stages call on the store (``grep`` of the callers, issue 30)."""

    # meta and items
    @property
    def prune_horizon(self) -> date | None: ...
    @property
    def seen_count(self) -> int: ...
    def upsert_items(self, items: Iterable[Item], now: datetime) -> list[Item]: ...
    def items_listed_between(self, start: date, end: date) -> list[Item]: ...
    def item(self, item_id: str) -> Item | None: ...
    def items(self, item_ids: Iterable[str]) -> list[Item]: ...
    def prune(self, horizon: date) -> None: ...
    def candidate_floor(self) -> date: ...

    # subscribers and departures
    def subscribers(self, active_only: bool = False) -> list[Subscriber]: ...
    def subscriber(self, email: str) -> Subscriber | None: ...
    def save_subscriber(self, subscriber: Subscriber) -> None: ...
    def save_subscribers(self, subscribers: Iterable[Subscriber]) -> None: ...
    def record_progress(self, subscribers: Iterable[Subscriber]) -> None: ...
    def remove_subscriber(self, email: str) -> bool: ...
    def record_vote(self, email: str, paper: str, vote: int, at: datetime) -> bool: ...
    def votes(self, email: str) -> dict[str, int]: ...
    def forget_departed(self, email: str, at: str) -> None: ...
    def take_departures(self) -> int: ...
    def departed_at(self, email: str) -> datetime | None: ...
    def departed_count(self) -> int: ...

    # the delivery ledger
    def delivered_ids(self, email: str, since: date | None = None) -> set[str]: ...
    def delivered_to(self, emails: Sequence[str], since: date) -> dict[str, set[str]]: ...
    def delivery_note(self, email: str, items: Iterable[Item], digest_id: str) -> DeliveryNote: ...
    def record_note(self, note: DeliveryNote, at: datetime) -> None: ...
    def deferred_sync(self) -> AbstractContextManager[DeferredSync]: ...
    def sync_through(self, appended: int) -> None: ...

    # sources, failures, cycles
    def source_states(self) -> list[dict[str, Any]]: ...
    def failed_days(self, source: str) -> list[date]: ...
    def fetched_through(self, source: str) -> date | None: ...
    def record_source(
        self,
        report: SourceReport,
        days_failed: Iterable[date],
        at: datetime,
        as_of: date | None = None,
        fetched_through: date | None = None,
        caught_up: tuple[date, date] | None = None,
        lost: Iterable[tuple[date, date, str]] = (),
    ) -> None: ...
    def source_state(self, source: str) -> dict[str, Any]: ...
    def set_source_state(self, source: str, state: dict[str, Any]) -> None: ...
    def record_failure(self, email: str, reason: str, at: datetime, permanent: bool) -> None: ...
    def clear_failure(self, email: str) -> None: ...
    def failures(self) -> list[dict[str, Any]]: ...
    def record_cycle(self, report: CycleReport) -> None: ...
    def cycles(self, last: int = 10) -> list[dict[str, Any]]: ...

    # persistence
    def flush(self) -> None: ...
    def close(self) -> None: ...


class LoopQueries(Protocol):
    """The web's most frequent reads and the one-click's change, awaited on the event loop without a
    worker thread: :class:`digest.state.postgres.loop_queries.LoopQueries` (PostgreSQL). The TinyDB
    keeper has none: its reads are in memory already."""

    async def subscriber(self, email: str) -> Subscriber | None: ...
    async def subscriber_with_votes(self, email: str) -> tuple[Subscriber | None, dict[str, int]]: ...
    async def leave(self, email: str) -> bool: ...


class Keeper(Protocol):
    """How the web front reaches the store: :class:`digest.state.keeper.StoreKeeper` (TinyDB: one
    store in memory, shared with ``digest serve``'s cycle) or
    :class:`digest.state.postgres.keeper.PostgresKeeper` (a few connections, every change one
    transaction, any number of replicas)."""

    @property
    def loop_queries(self) -> LoopQueries | None: ...
    @property
    def answer_seconds(self) -> float | None:
        """How long the web waits for the store before a "try again" page (None: no bound)."""
        ...

    def read(self, fn: Callable[[StoreBackend], T]) -> T: ...
    def read_now(self, fn: Callable[[StoreBackend], T]) -> tuple[bool, T | None]: ...
    def store(self) -> StoreBackend: ...
    def submit(self, fn: Callable[[StoreBackend], T], departure: str | None = None) -> Future[T]: ...
    def close(self) -> None: ...


def leave(store: StoreBackend, email: str) -> bool:
    """Unsubscribe ``email``; nothing is written when it left already (a one-click replayed at
    will must not grow the journal). On PostgreSQL the web runs it as one statement
    (:data:`digest.state.postgres.loop_queries.LEAVE`)."""
    if store.subscriber(email) is None and store.departed_at(email) is not None:
        return False
    return store.remove_subscriber(email)


def is_postgres(url: str) -> bool:
    return store_kind(url) == "postgresql"


@contextmanager
def open_backend(
    url: str,
    data_dir: Path,
    write: bool = True,
    wait_seconds: float = 60,
    stop: threading.Event | None = None,
    exclusive: bool = False,
) -> Iterator[StoreBackend]:
    """The store ``url`` names, open for writing (and closed on success), or a read-only snapshot.

    TinyDB: :func:`digest.state.store.open_store` (a writer holds the file lock). PostgreSQL: every
    write is its own transaction, so only a cycle (``exclusive``) takes a lock: an advisory lock,
    one cycle at a time across processes and machines.
    """
    try:
        kind = store_kind(url)
    except ValueError as exc:
        raise SettingsError(f"store.url: {exc}") from None
    if kind == "tinydb":
        from digest.state.store import open_store

        with open_store(data_dir, write=write, wait_seconds=wait_seconds, stop=stop) as store:
            yield store
        return
    from digest.state.postgres.store import PostgresStore

    pg = PostgresStore(url, data_dir=data_dir, writable=write)
    try:
        if exclusive and write:
            pg.lock_cycle(wait_seconds, stop)
        yield pg
        pg.flush()
    finally:
        pg.close_connection()
