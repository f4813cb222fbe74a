"""``digest backup`` / ``digest restore`` on a PostgreSQL store: one archive, as on TinyDB.

The archive is the same tar.gz (0600, written beside its name and renamed): the data dir's files
(the signing key, so old links keep working; archived digests) and, under ``store.postgresql/``,
every table in ``COPY`` format with the schema version (:mod:`digest.state.postgres.dump`), read
in one snapshot while the deployment runs. Restore needs an empty data dir and a database with no
digest rows, and loads the tables in one transaction before any file is moved into place.
``pg_dump`` works too (the tables are plain tables), but it needs a client matching the server's
version and leaves out the data dir; this needs neither.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import IO

from digest.errors import BackupError, StoreError
from digest.ops.backup import DATABASE_DIR, backup, restore
from digest.state.postgres.dump import dump_tables, load_tables

VERSION_MEMBER = f"{DATABASE_DIR}/VERSION"


def _add(archive: tarfile.TarFile, name: str, data: IO[bytes]) -> None:
    info = tarfile.TarInfo(f"{DATABASE_DIR}/{name}")
    info.size = data.seek(0, io.SEEK_END)
    info.mode = 0o600
    data.seek(0)
    archive.addfile(info, data)


def backup_postgres(url: str, data_dir: Path, target: Path) -> tuple[int, dict[str, int]]:
    """Write the store's tables and ``data_dir`` to ``target``; (files, rows per table)."""
    rows: dict[str, int] = {}

    def tables(archive: tarfile.TarFile) -> None:
        version, counted = dump_tables(url, lambda table, data: _add(archive, f"{table}.copy", data))
        _add(archive, "VERSION", io.BytesIO(str(version).encode()))
        rows.update(counted)

    files = backup(data_dir, target, extra=tables)
    return files, rows


def restore_postgres(source: Path, url: str, data_dir: Path) -> tuple[int, dict[str, int]]:
    """Load ``source``'s tables into the empty store at ``url`` and its files into ``data_dir``."""
    rows: dict[str, int] = {}

    def load(archive: tarfile.TarFile, members: list[tarfile.TarInfo]) -> None:
        named = {member.name: member for member in members if member.isfile()}

        def read(name: str) -> IO[bytes] | None:
            member = named.get(f"{DATABASE_DIR}/{name}")
            return archive.extractfile(member) if member is not None else None

        version_file = read("VERSION")
        try:
            version = int(version_file.read().decode() if version_file else "")
        except ValueError:
            raise BackupError(f"{source} is not a digest backup: {VERSION_MEMBER} is missing or not a number") from None
        try:
            rows.update(load_tables(url, version, lambda table: read(f"{table}.copy")))
        except StoreError as exc:
            raise BackupError(f"cannot restore {source}: {exc}") from None

    files = restore(source, data_dir, load=load)
    return files, rows
