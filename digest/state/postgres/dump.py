"""Every table of a PostgreSQL store out (one snapshot) and back into an empty database: what
``digest backup`` / ``digest restore`` put in and take from their archive on PostgreSQL.

Each table travels as PostgreSQL's own ``COPY`` text format, streamed (the server formats the rows;
nothing is held in memory), and the schema version travels beside them. Dumping reads one
repeatable-read snapshot, so the tables agree with each other (every delivery's paper is in
``seen``) while a cycle sends. Loading is one transaction into a database with no digest rows: the
tables are made at the backup's schema version, filled, their counters moved past the loaded rows,
and then migrated to this digest's version; it lands whole or not at all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO, Any

import psycopg

from digest.errors import StoreError
from digest.settings import redacted
from digest.state.postgres.schema import MIGRATE_LOCK, SCHEMA_VERSION, VERSION_TABLE, migrate, schema_version
from digest.state.postgres.store import PostgresStore, connect

# Every table of the schema, a referenced one before those that reference it (votes → subscribers).
TABLES = (
    "meta",
    "seen",
    "items",
    "subscribers",
    "deliveries",
    "departures",
    "sources",
    "failures",
    "cycles",
    "queue",
    "send_pace",
    "send_minutes",
    "votes",
    "signup_mails",
)
SERIALS = {"seen": "n", "subscribers": "n", "cycles": "id", "queue": "id"}

Add = Callable[[str, IO[bytes]], None]
Read = Callable[[str], IO[bytes] | None]


def dump_tables(url: str, add: Add) -> tuple[int, dict[str, int]]:
    """Hand each table's rows to ``add(table, file)``; return the schema version and the row counts."""
    store = PostgresStore(url, data_dir=None, writable=False)  # one snapshot, brought to this version
    rows: dict[str, int] = {}
    try:
        for table in TABLES:
            with tempfile.TemporaryFile() as spool:
                lines = 0
                with store.connection.cursor() as cursor, cursor.copy(f"COPY {table} TO STDOUT".encode()) as copy:
                    for chunk in copy:
                        spool.write(chunk)
                        lines += bytes(chunk).count(b"\n")  # one line per row: newlines in values are escaped
                spool.seek(0)
                add(table, spool)
                rows[table] = lines
        return schema_version(store.connection), rows
    finally:
        store.close_connection()


def load_tables(url: str, version: int, read: Read) -> dict[str, int]:
    """Fill the empty store at ``url`` from a dump at schema ``version``; the rows loaded per table.

    A :class:`StoreError` (and nothing changed) if the database holds digest rows, or the dump
    comes from a newer digest."""
    if version > SCHEMA_VERSION or version < 1:
        raise StoreError(f"the backup has schema version {version}; this digest reads 1 to {SCHEMA_VERSION}")
    where = redacted(url)
    connection = connect(url)
    loaded: dict[str, int] = {}
    with connection, connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        _drop_empty_schema(connection, where)
        migrate(connection, where, target=version)
        for table in TABLES:
            source = read(table)
            if source is None:  # a table newer than the backup's version
                continue
            with connection.cursor() as cursor:
                with cursor.copy(f"COPY {table} FROM STDIN".encode()) as copy:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
                loaded[table] = max(0, cursor.rowcount)
        for table, column in SERIALS.items():
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)".encode()
            )
        migrate(connection, where)
    return loaded


def _drop_empty_schema(connection: psycopg.Connection[tuple[Any, ...]], where: str) -> None:
    """Digest tables a start-up made (all empty) go, so the backup's version can be made; rows refuse."""
    if schema_version(connection) == 0:
        return
    found = {}
    for table in TABLES:
        exists = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if exists and exists[0]:
            row = connection.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            if row and row[0]:
                found[table] = int(row[0])
    if found:
        held = ", ".join(f"{count} {table}" for table, count in found.items())
        raise StoreError(
            f"the PostgreSQL store {where} is not empty ({held}): restore into an empty database "
            "(create a new one, or drop this one's digest tables first); nothing was restored"
        )
    for table in (*reversed(TABLES), VERSION_TABLE):
        connection.execute(f"DROP TABLE IF EXISTS {table}".encode())
