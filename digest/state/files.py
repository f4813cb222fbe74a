"""A TinyDB storage that writes only when asked, and then atomically.

TinyDB's default ``JSONStorage`` rewrites the file in place on every insert: a crash mid-write
leaves half a file, and a cycle that records 10,000 deliveries rewrites the whole store 10,000
times. This storage keeps the database in memory, and :meth:`flush` writes a temp file, fsyncs it,
keeps the previous good file as ``<name>.bak`` and ``os.replace``-s the new one into place, so the
store on disk is always either the old or the new version, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from digest.errors import StoreCorruptError, StoreError, describe_os_error

REPAIR_HINT = "; `digest doctor --repair` restores the last good backup"


def read_json_file(path: Path) -> dict[str, Any]:
    """Parse a store file, or raise :class:`StoreCorruptError` naming it; never modifies it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreError(describe_os_error(exc, "read the store file")) from None
    except UnicodeDecodeError as exc:
        raise StoreCorruptError(
            f"store file {path} is not UTF-8 text ({exc}); it was left untouched{REPAIR_HINT}"
        ) from exc
    if not text.strip():
        raise StoreCorruptError(f"store file {path} is empty; it was left untouched{REPAIR_HINT}")
    try:
        data = json.loads(text)
    except RecursionError:
        raise StoreCorruptError(
            f"store file {path} is nested too deeply to be a digest store; it was left untouched{REPAIR_HINT}"
        ) from None
    except json.JSONDecodeError as exc:
        raise StoreCorruptError(
            f"store file {path} is corrupt or truncated (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"it was left untouched{REPAIR_HINT}"
        ) from exc
    if not isinstance(data, dict):
        raise StoreCorruptError(f"store file {path} does not hold a JSON object; it was left untouched{REPAIR_HINT}")
    return data


def write_atomically(path: Path, payload: bytes | Iterable[bytes]) -> None:
    """Write ``payload`` (bytes, or pieces of it) to ``path`` so that readers and crashes see the
    old or the new file only.

    The temp file is created beside ``path`` with mode 0600 (the file, like the store and an export,
    may hold every subscriber's address), and is removed whatever goes wrong.
    """
    temp = temp_path(path)
    try:
        temp.unlink(missing_ok=True)  # a stale one of a killed process with our pid: O_EXCL below
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as handle:
            if isinstance(payload, bytes):
                handle.write(payload)
            else:
                handle.writelines(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:  # a full disk, a read-only one, a stop: never leave the half-written file
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove the temp files of writes to ``path`` that a killed process left (call with the lock held:
    only the lock's holder writes, so any such file is stale); return them."""
    removed = []
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


class BufferedAtomicStorage(Storage):  # type: ignore[misc]
    """In-memory TinyDB storage over a JSON file; :meth:`flush` persists atomically with a backup."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] | None = read_json_file(self.path) if self.path.exists() else None
        self._dirty = False
        self._held: dict[str, Callable[[], Iterable[dict[str, Any]]]] = {}

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self._dirty = True

    def hand_over(self, name: str, documents: Callable[[], Iterable[dict[str, Any]]]) -> dict[str, Any]:
        """Give table ``name`` to a caller that keeps it in its own form; return it as read.

        From then on TinyDB no longer holds the table (for a big store, the parsed documents and
        the caller's own structures would otherwise be in memory twice); every write produces it
        again from ``documents()``, a thousand at a time.
        """
        self._held[name] = documents
        return (self._data or {}).pop(name, None) or {}

    def mark_changed(self) -> None:
        """A handed-over table changed: the next :meth:`flush` writes the file."""
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty or self._data is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            backup = self.path.with_name(self.path.name + ".bak")
            _keep_as_backup(self.path, backup)
        held = {name: numbered(documents()) for name, documents in self._held.items()}
        write_atomically(self.path, json_pieces({**self._data, **held}))
        self._dirty = False

    def close(self) -> None:
        self.flush()


DOCUMENTS_PER_PIECE = 1000


def _dumps(value: Any) -> bytes:
    # ASCII only (other characters as \uXXXX): one dash or accent anywhere makes Python hold the
    # whole text read back at two bytes per character (UCS-2), and that text is the peak of loading
    # a big store.
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def json_pieces(data: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of ``json.dumps(data)`` (compact, ASCII), a thousand documents of a table at a time.

    A table may also be an iterator of ``(doc_id, document)`` pairs, written as the object they make.

    Why: encoding a store of tens of megabytes in one go holds the whole text twice (str, then
    bytes) on top of the data, which is the peak of a big cycle's memory. Pieces keep that to about
    a megabyte and still use the C encoder (``json.dump`` to a file would use the slow Python one).
    """
    yield b"{"
    for number, (name, table) in enumerate(data.items()):
        yield (b"," if number else b"") + _dumps(name) + b":"
        if isinstance(table, dict):
            table = iter(table.items())
        yield from _object_pieces(table) if isinstance(table, Iterator) else (_dumps(table),)
    yield b"}"


def _object_pieces(pairs: Iterator[tuple[str, Any]]) -> Iterator[bytes]:
    yield b"{"
    first = True
    while piece := dict(islice(pairs, DOCUMENTS_PER_PIECE)):
        yield (b"" if first else b",") + _dumps(piece)[1:-1]
        first = False
    yield b"}"


def numbered(documents: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A table's documents as TinyDB stores them, under the ids "1", "2", …"""
    return ((str(doc_id), document) for doc_id, document in enumerate(documents, start=1))


def _keep_as_backup(current: Path, backup: Path) -> None:
    """Point ``backup`` at the current (good) file before it is replaced: a hard link costs no copy."""
    backup.unlink(missing_ok=True)
    try:
        os.link(current, backup)
    except OSError:
        write_atomically(backup, current.read_bytes())


def keep_copy(current: Path, copy: Path) -> None:
    """Keep ``current`` as ``copy`` (once: an existing copy is the older, and is not replaced)."""
    if current.exists() and not copy.exists():
        write_atomically(copy, current.read_bytes())
