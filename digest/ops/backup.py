"""``digest backup FILE`` and ``digest restore FILE``: the whole data dir as one tar.gz, and back.

Consistent while ``digest serve`` runs: the archive is written with the store lock held, the lock
every writer takes (a cycle for its whole run, a web change or a CLI command for a moment), so no
file changes half-way and the store file and its delivery journal agree — the journal is replayed
on the next open, so a restored service re-sends nothing. A running cycle is waited for.

The archive holds everything ``data_dir`` holds (store, journals, the store's own backup, the
generated secret key — so old links keep working —, archived digests, outbox) but the lock file
and stale temp files. It is created 0600 (it has every subscriber's address and the secret key)
beside its final name and renamed into place, so a failed backup leaves no partial file.

Restore goes only into a missing or empty directory (one a start-up left with only the lock file
counts as empty): it never merges with or overwrites a store. The archive is checked first (a
digest backup, regular files only, no path leaving the directory), unpacked beside the data, its
store opened once to prove it reads, and only then moved into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from digest.errors import BackupError, DigestError, describe_os_error
from digest.paths import LOCK_FILE, STORE_FILE
from digest.state.store import Store, store_lock

LOCK_WAIT_SECONDS = 600.0  # a running cycle finishes first; longer than any healthy cycle
DATABASE_DIR = "store.postgresql"  # a PostgreSQL store's tables in the archive (digest.ops.backup_postgres)

Extra = Callable[[tarfile.TarFile], None]  # adds a PostgreSQL store's tables to the archive
Load = Callable[[tarfile.TarFile, list[tarfile.TarInfo]], None]  # loads them from it


def _members(data_dir: Path) -> Iterator[Path]:
    """The files and directories to archive, relative to ``data_dir``, parents first."""
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        base = Path(root).relative_to(data_dir)
        for name in dirs:
            yield base / name
        for name in sorted(files):
            if name == LOCK_FILE or (name.startswith(".") and name.endswith(".tmp")):
                continue
            yield base / name


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _write(data_dir: Path, raw: BinaryIO, wait_seconds: float, extra: Extra | None = None) -> int:
    files = 0
    # The TinyDB store's writers take the lock; beside a PostgreSQL store, data_dir has no store to lock.
    lock = store_lock(data_dir, wait_seconds) if extra is None else contextlib.nullcontext()
    with lock, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        if extra is not None:
            extra(archive)
        for relative in _members(data_dir) if data_dir.is_dir() else ():
            archive.add(data_dir / relative, arcname=relative.as_posix(), recursive=False)
            files += (data_dir / relative).is_file()
    return files


def backup(data_dir: Path, target: Path, wait_seconds: float = LOCK_WAIT_SECONDS, extra: Extra | None = None) -> int:
    """Write ``data_dir`` to ``target`` (tar.gz, mode 0600; ``-``: standard output, for ``docker
    compose exec -T``) under the store lock, with what ``extra`` adds; the number of files."""
    if extra is None and not (data_dir / STORE_FILE).is_file():
        raise BackupError(f"nothing to back up: no store in {data_dir} (data_dir); check DIGEST_DATA_DIR")
    if str(target) == "-":
        try:
            files = _write(data_dir, sys.stdout.buffer, wait_seconds, extra)
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise BackupError(describe_os_error(exc, "write the backup to standard output")) from None
        return files
    if _inside(target, data_dir):
        raise BackupError(f"{target} is inside the data directory {data_dir}: write the backup somewhere else")
    if target.exists() or target.is_symlink():
        raise BackupError(f"{target} already exists: choose another name, or remove it first")
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BackupError(describe_os_error(exc, "create the backup", temp)) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            files = _write(data_dir, raw, wait_seconds, extra)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, target)
    except OSError as exc:
        raise BackupError(describe_os_error(exc, "write the backup", target)) from None
    finally:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
    return files


def _empty(data_dir: Path) -> bool:
    try:
        return all(entry.name == LOCK_FILE for entry in data_dir.iterdir())
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        raise BackupError(f"data_dir {data_dir} is a file, not a directory: set DIGEST_DATA_DIR") from None


def _check(archive: tarfile.TarFile, source: Path, postgres: bool = False) -> list[tarfile.TarInfo]:
    members = archive.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise BackupError(f"{source} is not a digest backup: it holds {member.name!r}")
    names = {member.name for member in members if member.isfile()}
    tables = any(name.startswith(f"{DATABASE_DIR}/") for name in names)
    if postgres and not tables and STORE_FILE in names:
        raise BackupError(
            f"{source} holds a TinyDB store ({STORE_FILE}): restore it with store.url = tinydb:, "
            "then copy it over with `digest migrate-store --to URL`"
        )
    if not postgres and tables:
        raise BackupError(f"{source} holds a PostgreSQL store: set store.url to an empty PostgreSQL database")
    if not postgres and STORE_FILE not in names:
        raise BackupError(f"{source} is not a digest backup: it has no {STORE_FILE}")
    if postgres and not tables:
        raise BackupError(f"{source} is not a digest backup of a PostgreSQL store: it has no {DATABASE_DIR}/")
    return members


def restore(source: Path, data_dir: Path, load: Load | None = None) -> int:
    """Unpack the backup ``source`` into the missing or empty ``data_dir`` (``load``: its PostgreSQL
    tables into the database, before any file is moved into place); the number of files."""
    if not _empty(data_dir):
        raise BackupError(
            f"data_dir {data_dir} is not empty: restore only into an empty or missing directory "
            "(move the current one aside first)"
        )
    try:
        archive = tarfile.open(source, mode="r:gz")  # noqa: SIM115 - closed by the `with` below
    except FileNotFoundError:
        raise BackupError(f"no such backup file {source}") from None
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{source} is not a digest backup (a .tar.gz written by `digest backup`): {exc}") from None
    with archive, store_lock(data_dir, 5.0):
        if not _empty(data_dir):  # something started on it meanwhile
            raise BackupError(f"data_dir {data_dir} is not empty any more: nothing was restored")
        members = _check(archive, source, postgres=load is not None)
        staging = data_dir / f".restore.{os.getpid()}.tmp"
        files = [m for m in members if PurePosixPath(m.name).parts[0] != DATABASE_DIR]
        try:
            archive.extractall(staging, members=files, filter="data")
            staging.mkdir(exist_ok=True)
            if load is None:
                Store(staging, writable=False)  # proves the store reads (and its journal replays)
            else:
                load(archive, members)  # one transaction: the tables land whole, or nothing moves
            for entry in sorted(staging.iterdir()):
                entry.rename(data_dir / entry.name)
        except (OSError, tarfile.TarError) as exc:
            raise BackupError(f"cannot restore {source} into {data_dir}: {exc}") from None
        except BackupError:
            raise
        except DigestError as exc:
            raise BackupError(f"{source} holds a store that does not read: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sum(1 for member in files if member.isfile())
