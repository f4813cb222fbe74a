"""Unsubscribes recorded without the store's lock: ``unsubscribes.pending``, one fsynced line each.

Why: a person who asks to leave is never refused. ``digest serve`` applies a one-click
unsubscribe under the store's file lock; when another process holds that lock for long (a CLI
``digest run`` beside the service), the request cannot wait minutes, and a 503 to a mail
provider may never be retried. So the service appends it here instead and answers 200 once it
is on disk. Every process that opens the store applies these lines on top of it (the person is
gone for everyone at once), the lock's holder checks for new ones before each email it sends
(:meth:`digest.state.store.Store.take_departures`), and folds them into the delivery journal, deleting
the file, before it writes the store.

Appenders and the one who takes the lines meet on the file's own ``flock``, held for the length
of a write: a line is either in the file that was taken or in a new one, never lost between.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from digest.paths import KEPT_DIR, PENDING_FILE
from digest.state.files import write_atomically
from digest.state.shape import is_iso_time

Departure = tuple[str, str]  # (lower-case address, ISO time)
KEPT_SUFFIX = ".jsonl"


@contextmanager
def _locked_file(path: Path, flags: int) -> Iterator[int | None]:
    """The file at ``path`` opened and ``flock``-ed, still the one at that path once locked (the
    taker deletes it while holding the lock); None if there is none and ``flags`` do not create it."""
    while True:
        try:
            descriptor = os.open(path, flags | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            yield None
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(descriptor).st_ino:
                yield descriptor
                return
        finally:
            os.close(descriptor)  # releases the flock


def append_departure(data_dir: Path, email: str, at: datetime) -> None:
    """Record that ``email`` unsubscribed at ``at``: on disk (fsynced) when this returns."""
    data = memoryview(_line(email, at))
    with _locked_file(data_dir / PENDING_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT) as descriptor:
        assert descriptor is not None  # O_CREAT
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            data = memoryview(b"\n" + bytes(data))  # after a line torn by a crash: start a fresh one
        while data:
            data = data[os.write(descriptor, data) :]
        os.fsync(descriptor)


def _line(email: str, at: datetime) -> bytes:
    return (json.dumps({"unsubscribed": email.lower(), "at": at.isoformat()}, ensure_ascii=False) + "\n").encode()


def parse(text: bytes) -> list[Departure]:
    """The complete, well-formed lines (a torn or foreign line is skipped, as in the journal)."""
    found: list[Departure] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            email, at = entry.get("unsubscribed"), entry.get("at")
            if isinstance(email, str) and email and isinstance(at, str) and is_iso_time(at):
                found.append((email.lower(), at))
    return found


def pending_departures(data_dir: Path) -> bool:
    """Whether unsubscribes wait in ``data_dir``: the pending file, or any kept one (:func:`keep_departure`)."""
    return (data_dir / PENDING_FILE).exists() or bool(_kept_files(data_dir))


# A PostgreSQL web front keeps an unsubscribe the database did not take in time as a file of its
# own in KEPT_DIR, written whole under a temporary name and renamed into place: the one-click never
# waits for a lock, not even one held by a taker stuck on a database that hangs mid-fold. Takers
# lock each file (without waiting: one busy is another taker's) and delete it once folded; a fold
# applied twice (a taker that died before the delete) changes nothing (forget_departed).


def keep_departure(data_dir: Path, email: str, at: datetime) -> None:
    """Record that ``email`` unsubscribed at ``at`` in a file of its own: on disk when this returns
    (written whole, then renamed into place: a taker never reads half of it)."""
    kept = data_dir / KEPT_DIR
    kept.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(kept / f"{uuid.uuid4().hex}{KEPT_SUFFIX}", _line(email, at))


def take_kept_departures(data_dir: Path, fold: Callable[[list[Departure]], None]) -> int:
    """Hand each kept file's lines to ``fold`` and delete it; a file another taker holds is left
    to it. Costs one ``listdir`` (a failed one when no unsubscribe was ever kept)."""
    taken = 0
    for path in _kept_files(data_dir):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # taken meanwhile
            continue
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not path.exists():  # folded and deleted before we locked it
                continue
            departures = parse(os.pread(descriptor, os.fstat(descriptor).st_size, 0))
            if departures:
                fold(departures)
            path.unlink(missing_ok=True)
            taken += len(departures)
        finally:
            os.close(descriptor)
    return taken


def _kept_files(data_dir: Path) -> list[Path]:
    try:
        names = os.listdir(data_dir / KEPT_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [data_dir / KEPT_DIR / name for name in sorted(names) if name.endswith(KEPT_SUFFIX)]


def read_departures(data_dir: Path) -> list[Departure]:
    """The pending lines, left in place (any process opening the store applies them)."""
    try:
        return parse((data_dir / PENDING_FILE).read_bytes())
    except FileNotFoundError:
        return []


def take_departures(data_dir: Path, fold: Callable[[list[Departure]], None]) -> int:
    """Hand the pending lines to ``fold`` (which journals them) and delete the file; only the
    holder of the store's lock calls this. Costs one ``stat`` when there is nothing pending."""
    path = data_dir / PENDING_FILE
    if not path.exists():
        return 0
    with _locked_file(path, os.O_RDONLY) as descriptor:
        if descriptor is None:
            return 0
        size = os.fstat(descriptor).st_size
        departures = parse(os.pread(descriptor, size, 0))
        if departures:
            fold(departures)  # journalled and fsynced before the file goes
        os.unlink(path)
        return len(departures)
