"""The one in-memory store of a ``digest serve`` process, shared by the web pages, ``/healthz`` and
the scheduled cycle.

Why: parsing the store file is slow and memory-hungry at 10,000 subscribers, so a
process that served each request from a freshly read file answered in seconds and made one-click
unsubscribes wait for (or fail on) the cycle's file lock. Here the store is read once and kept:

- Reads use memory. Before one, the identity (inode, size, mtime) of ``digest.json`` and of the
  delivery journals is compared with what this process last loaded or wrote: when another
  process (a CLI ``subscribe``, ``import`` or ``run``) changed them, the store is read again.
  Every change is on disk (the file plus the journal), so the reload loses nothing.
- Writes (a person's change) are journalled and fsynced by the store before they return. While
  this process's own cycle runs (it holds the file lock), they go straight into the shared store;
  otherwise the file lock is taken for a moment (CLI commands hold it briefly), the store reloaded
  if another process changed it, and the change applied. No flush per write: the journal is the
  durability, folded into the file by the cycle's checkpoints and by :meth:`StoreKeeper.close`.
- A ``digest run`` in another process holds the file lock for its whole cycle: a web write then
  waits :data:`WRITE_WAIT_SECONDS` and may answer "busy". That is the one case left.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from digest.errors import CycleLockedError, DigestError, StoreWriteError, describe_os_error
from digest.paths import FOLDED_JOURNAL_FILE, JOURNAL_FILE, PENDING_FILE, STORE_FILE
from digest.state.departures import append_departure
from digest.state.files import remove_stale_temp_files
from digest.state.store import Store, store_lock

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_WAIT_SECONDS = 3.0  # how long a web write waits for another process's file lock
DEPARTURE_WAIT_SECONDS = 0.5  # and an unsubscribe, before it is recorded without the lock
LOCK_POLL_SECONDS = 0.05  # and how often it looks whether this process's own cycle took it

Identity = tuple[tuple[int, int, int] | None, ...]
Queued = tuple[Callable[["Store"], Any], Future[Any], str | None]  # a change, its answer, an unsubscribe's address


def file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class StoreKeeper:
    """Holds the store of ``data_dir`` in memory; see the module docstring."""

    loop_queries = None  # reads are in memory already: see read_now
    answer_seconds = None  # a write waits for the file lock as write_wait_seconds says

    def __init__(self, data_dir: Path, write_wait_seconds: float = WRITE_WAIT_SECONDS) -> None:
        self.data_dir = data_dir
        self.write_wait_seconds = write_wait_seconds
        self._lock = threading.RLock()  # guards _store, _identity and the flags
        self._store: Store | None = None
        self._identity: Identity | None = None
        self._cycle_running = False
        self._file_lock_held = False  # by a web write of this process
        self._writing = threading.Lock()  # the writer's batch or the cycle's start/end, not both
        # Unsubscribes have their own queue and writer: one never waits behind another change that
        # waits for a lock held by another process (its wait is much longer).
        self._queues: dict[bool, queue.SimpleQueue[Queued]] = {True: queue.SimpleQueue(), False: queue.SimpleQueue()}
        self._writers: dict[bool, threading.Thread] = {}
        self._recorded_departures: set[str] = set()  # in unsubscribes.pending since the last read

    def _files(self) -> Identity:
        # The folded journal too: a flush renames the journal to it, so it changes with every
        # checkpoint that had changes even if the new store file reused the old one's inode.
        names = (STORE_FILE, JOURNAL_FILE, FOLDED_JOURNAL_FILE, PENDING_FILE)
        return tuple(file_identity(self.data_dir / name) for name in names)

    def _current(self) -> Store:
        """The shared store, read again first if another process changed the files."""
        with self._lock:
            if (self._cycle_running or self._file_lock_held) and self._store is not None:
                return self._store  # we hold the file lock: no other process can have written
            identity = self._files()
            if self._store is None or identity != self._identity:
                gc.unfreeze()  # the old copy (it has reference cycles) may be collected again
                self._store = None  # let the old copy go before the new one is read (memory peak)
                self._store = Store(self.data_dir)
                self._recorded_departures.clear()
                self._identity = identity
                # Keep the collector's full passes off the store's million long-lived objects:
                # each pass would walk them all while holding the GIL, stalling every request.
                gc.freeze()
            return self._store

    def read(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)`` on the up-to-date shared store, under the store's lock (blocking: call it
        from a worker thread, never on the event loop)."""
        store = self._current()
        with store._lock:
            return fn(store)

    def read_now(self, fn: Callable[[Store], T]) -> tuple[bool, T | None]:
        """``(True, fn(store))`` if that needs neither reading the file again nor waiting for a lock,
        else ``(False, None)``: then call :meth:`read` in a worker thread.

        For the event loop: a handler that only looks a person up answers at once, without the
        hand-off to a worker thread and back (the larger part of a small request's cost), and
        never stalls the loop behind a reload or a cycle's checkpoint that holds the store's lock.
        Costs three ``stat`` calls (is the file as this process left it?).
        """
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            store = self._store
            if store is None:
                return False, None
            if not (self._cycle_running or self._file_lock_held) and self._files() != self._identity:
                return False, None
            if not store._lock.acquire(blocking=False):
                return False, None
        finally:
            self._lock.release()
        try:
            return True, fn(store)
        finally:
            store._lock.release()

    def store(self) -> Store:
        """The up-to-date shared store, for callers that make single calls (each takes the lock)."""
        return self._current()

    def write(self, fn: Callable[[Store], T], departure: str | None = None) -> T | None:
        """Apply a person's change (``fn`` journals it: save_subscriber, remove_subscriber) durably,
        and return what ``fn`` returned; blocking (see :meth:`submit`)."""
        return self.submit(fn, departure).result()

    def submit(self, fn: Callable[[Store], T], departure: str | None = None) -> Future[T]:
        """Queue a person's change for the writer thread; the future is done once the change is in
        memory and fsynced in the journal (``asyncio.wrap_future`` it in a handler).

        Why one writer thread: every write takes the file lock (a CLI command may be writing)
        and an fsync. The writer takes whatever queued up while it was busy and
        applies it all under one file lock and one fsync, so twenty one-click unsubscribes at
        once cost about one, and no handler thread waits in a lock queue. The future fails with
        :class:`CycleLockedError` when another process holds the file lock for longer than
        :attr:`write_wait_seconds` (a CLI ``digest run``) — except an unsubscribe (``departure``
        is the address): that one waits at most :data:`DEPARTURE_WAIT_SECONDS`, and is then
        recorded without the lock (:mod:`digest.state.departures`); its future's result is then None.
        """
        future: Future[T] = Future()
        leaving = departure is not None
        with self._lock:
            writer = self._writers.get(leaving)
            if writer is None or not writer.is_alive():
                name = "store-writer-unsubscribes" if leaving else "store-writer"
                writer = self._writers[leaving] = threading.Thread(
                    target=self._write_queued, args=(leaving,), name=name, daemon=True
                )
                writer.start()
        self._queues[leaving].put((fn, future, departure))
        return future

    def _write_queued(self, departures: bool) -> None:
        waiting = self._queues[departures]
        while True:
            batch = [waiting.get()]
            while True:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            if not departures:
                self._apply_batch(batch, self.write_wait_seconds, fail=True)
                continue
            try:
                self._apply_batch(batch, DEPARTURE_WAIT_SECONDS)
            except CycleLockedError:
                for _, future, departure in batch:
                    assert departure is not None
                    self._record_departure(departure, future)

    def _record_departure(self, email: str, future: Future[Any]) -> None:
        """The file lock stayed taken: the unsubscribe goes to ``unsubscribes.pending`` (fsynced),
        and into this process's memory, so it shows at once and the cycle here skips the person."""
        at = datetime.now(UTC)
        if email.lower() in self._recorded_departures:  # already on disk: a repeat adds nothing
            future.set_result(None)
            return
        try:
            append_departure(self.data_dir, email, at)
        except OSError as exc:
            future.set_exception(StoreWriteError(describe_os_error(exc, "record an unsubscribe in", self.data_dir)))
            return
        with self._lock:
            self._recorded_departures.add(email.lower())
            if self._store is not None:
                self._store.forget_departed(email, at.isoformat())
            if self._identity is not None:  # our own line: no reason to read the store again
                self._identity = (*self._identity[:-1], file_identity(self.data_dir / PENDING_FILE))
        log.info("recorded an unsubscribe while another process holds the store (it is applied from %s)", PENDING_FILE)
        future.set_result(None)

    def _apply_batch(self, batch: list[Queued], wait: float, fail: bool = False) -> None:
        """Apply the batch under the file lock and one fsync; a lock that stays taken raises
        :class:`CycleLockedError`, or with ``fail`` fails every future with it."""
        try:
            with self._file_lock_for_writes(wait) as store, store._lock, store.deferred_sync() as pending:
                outcomes: list[tuple[bool, Any]] = []
                for fn, _, _ in batch:
                    try:
                        outcomes.append((True, fn(store)))
                    except Exception as exc:  # handed to the one who asked
                        outcomes.append((False, exc))
            store.sync_through(pending.appended)  # outside the locks: readers never wait for it
        except CycleLockedError as exc:
            if not fail:
                raise
            for _, future, _ in batch:
                future.set_exception(exc)
            return
        except Exception as exc:  # the fsync failed
            for _, future, _ in batch:
                future.set_exception(exc)
            return
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    @contextmanager
    def _file_lock_for_writes(self, wait: float) -> Iterator[Store]:
        """The shared store with the right to write it: under this process's own cycle (which holds
        the file lock), or with the file lock taken for the moment, waiting for another process's
        lock at most ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            with self._writing:
                if self._cycle_running:  # our own cycle holds the file lock: write into its store
                    assert self._store is not None
                    yield self._store
                    return
                try:
                    with store_lock(self.data_dir, min(LOCK_POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                        with self._lock:
                            store = self._current()
                            self._file_lock_held = True
                        try:
                            yield store
                            return
                        finally:
                            with self._lock:
                                self._identity = self._files()
                                self._file_lock_held = False
                except CycleLockedError:
                    if time.monotonic() >= deadline:
                        raise
            time.sleep(0)  # let the cycle, which holds the file lock, take _writing to say so

    @contextmanager
    def cycle(self, wait_seconds: float, stop: threading.Event | None = None) -> Iterator[Store]:
        """The shared store for this process's cycle, with the file lock held throughout (one cycle
        at a time across processes). Web writes meanwhile go straight into the store. A cycle that
        raises leaves memory that its flushes did not write: the store is read again next time."""
        with store_lock(self.data_dir, wait_seconds, stop):
            remove_stale_temp_files(self.data_dir / STORE_FILE)  # only the lock's holder writes
            with self._writing, self._lock:
                store = self._current()
                self._cycle_running = True
            ok = False
            try:
                yield store
                ok = True
            finally:
                with self._writing, self._lock:  # after the web write in progress, if any
                    self._cycle_running = False
                    if ok:
                        self._identity = self._files()
                    else:
                        self._store, self._identity = None, None

    def close(self) -> None:
        """Fold the journal into the store file (serve's shutdown), if the file lock is free soon;
        if not, nothing is lost: the journal is replayed by whoever opens the store next."""
        with self._lock:
            store = self._store
            if store is None:
                return
            try:
                with store_lock(self.data_dir, self.write_wait_seconds):
                    if self._files() == self._identity:  # else another process has it all already
                        store.close()
                    self._store, self._identity = None, None
            except DigestError as exc:
                log.warning("the store was not checkpointed at shutdown (%s); its journal keeps every change", exc)
