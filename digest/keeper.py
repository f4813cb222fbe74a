"""The one in-memory store of a ``digest serve`` process, shared by the web pages, ``/healthz`` and
the scheduled cycle.

Why: parsing the store file costs about half a second and 160 MB at 10,000 subscribers, so a
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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from digest.errors import CycleLockedError, DigestError
from digest.storage import remove_stale_temp_files
from digest.store import FOLDED_JOURNAL_FILE, JOURNAL_FILE, STORE_FILE, Store, store_lock

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_WAIT_SECONDS = 3.0  # how long a web write waits for another process's file lock
LOCK_POLL_SECONDS = 0.05  # and how often it looks whether this process's own cycle took it

Identity = tuple[tuple[int, int, int] | None, ...]


def file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class StoreKeeper:
    """Holds the store of ``data_dir`` in memory; see the module docstring."""

    def __init__(self, data_dir: Path, write_wait_seconds: float = WRITE_WAIT_SECONDS) -> None:
        self.data_dir = data_dir
        self.write_wait_seconds = write_wait_seconds
        self._lock = threading.RLock()  # guards _store, _identity and the flags
        self._store: Store | None = None
        self._identity: Identity | None = None
        self._cycle_running = False
        self._file_lock_held = False  # by a web write of this process
        self._writing = threading.Lock()  # one web write at a time; taken before the file lock

    def _files(self) -> Identity:
        # The folded journal too: a flush renames the journal to it, so it changes with every
        # checkpoint that had changes even if the new store file reused the old one's inode.
        names = (STORE_FILE, JOURNAL_FILE, FOLDED_JOURNAL_FILE)
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

    def store(self) -> Store:
        """The up-to-date shared store, for callers that make single calls (each takes the lock)."""
        return self._current()

    def write(self, fn: Callable[[Store], T]) -> T:
        """Apply a person's change (``fn`` journals it: save_subscriber, remove_subscriber) durably.

        Raises :class:`CycleLockedError` when another process holds the file lock for longer than
        :attr:`write_wait_seconds` (a CLI ``digest run``).
        """
        deadline = time.monotonic() + self.write_wait_seconds
        while True:
            # One writing thread at a time (the others wait here, not in the file lock's polling);
            # readers never wait for a write's fsync: the file lock is ours, so memory is current.
            with self._writing:
                if self._cycle_running:  # our own cycle holds the file lock: write into its store
                    assert self._store is not None
                    return self._apply(self._store, fn)
                try:
                    with store_lock(self.data_dir, min(LOCK_POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                        with self._lock:
                            store = self._current()
                            self._file_lock_held = True
                        try:
                            return self._apply(store, fn)
                        finally:
                            with self._lock:
                                self._identity = self._files()
                                self._file_lock_held = False
                except CycleLockedError:
                    if time.monotonic() >= deadline:
                        raise
            time.sleep(0)  # let the cycle, which holds the file lock, take _writing to say so

    @staticmethod
    def _apply(store: Store, fn: Callable[[Store], T]) -> T:
        with store._lock:
            return fn(store)

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
