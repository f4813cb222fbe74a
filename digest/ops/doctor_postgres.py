"""``digest doctor`` on a PostgreSQL store: can digest reach it, is its schema one this digest reads,
and are its records as digest writes them.

The TinyDB doctor looks for a store file that does not parse or a journal torn by a crash; a
database has neither (every change is a transaction, the ledger's key a constraint). What can still
be wrong is what a person or another program wrote: a subscriber record of the wrong shape, filed
under another address, or with no rules left. Nothing here changes the database (the schema is
read, never migrated), so doctor is safe beside a running deployment; there is no ``--repair``:
fix the rows named, or restore a backup into an empty database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from digest.errors import StoreError
from digest.ops.doctor import Examination
from digest.settings import data_dir_problem, redacted
from digest.state.postgres.schema import SCHEMA_VERSION, schema_version
from digest.state.postgres.store import connect
from digest.state.shape import MAX_PROBLEMS, document_problem

COUNTED = ("subscribers", "seen", "items", "deliveries", "departures", "votes", "queue", "cycles")
REPAIR_HINT = "correct the rows named in the database, or restore a `digest backup` into an empty one"

Connection = psycopg.Connection[tuple[Any, ...]]


def examine_postgres(url: str, data_dir: Path) -> Examination:
    """What doctor reports about the store at ``url`` (and the data dir beside it: signing key, archive)."""
    found = Examination(repair_hint=REPAIR_HINT)
    unwritable = data_dir_problem(data_dir, write=True) if data_dir.is_dir() else None
    if unwritable:
        found.writable = False
        found.problems.append(unwritable)
    try:
        connection = connect(url)
    except StoreError as exc:
        found.writable = False
        found.problems.insert(0, f"{exc}; check store.url and that the server is up")
        return found
    with connection:
        version = schema_version(connection)
        where = redacted(url)
        if version > SCHEMA_VERSION:
            found.writable = False
            found.problems.insert(
                0,
                f"store {where} has schema version {version}, newer than this digest ({SCHEMA_VERSION}): "
                "upgrade digest",
            )
            return found
        if version == 0:
            found.notes.append(f"no digest tables yet in {where} (the first command that opens the store creates them)")
            return found
        later = (
            f" (this digest upgrades it to {SCHEMA_VERSION} when it next opens it)" if version < SCHEMA_VERSION else ""
        )
        found.notes.append(f"store {where}: connected, schema version {version}{later}")
        found.notes.append(", ".join(f"{count} {table}" for table, count in counts(connection).items()))
        found.notes.extend(queue_upkeep_warnings(connection))
        found.problems.extend(record_problems(connection)[:MAX_PROBLEMS])
    return found


# Whether this role may ANALYZE the queue: a superuser, the table's or the database's owner (or a
# member of theirs), or from PostgreSQL 17 one granted MAINTAIN on it.
MAY_ANALYSE_QUEUE = (
    "SELECT r.rolsuper OR pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE'), "
    "pg_get_userbyid(c.relowner), quote_ident(current_user) FROM pg_class c, pg_database d, pg_roles r "
    "WHERE c.oid = 'queue'::regclass AND d.datname = current_database() AND r.rolname = current_user"
)


def queue_upkeep_warnings(connection: Connection) -> list[str]:
    """A warning when digest's role may not analyse the queue table. The scheduler does as it
    queues (:func:`digest.state.postgres.queue.enqueue`); without it, a worker that planned its
    claim on the empty queue between cycles keeps a plan that reads the whole queue for every
    email. Not a problem of the data, so a note: doctor still exits 0."""
    if not has_table(connection, "queue"):
        return []
    row = connection.execute(MAY_ANALYSE_QUEUE).fetchone()
    if row is None or row[0]:
        return []
    if connection.info.server_version >= 170000:
        granted = connection.execute("SELECT has_table_privilege('queue', 'MAINTAIN')").fetchone()
        if granted and granted[0]:
            return []
    role = row[2]  # the role the checks are about, quoted as the statements below need it
    return [
        f"warning: role {role} may not analyse the queue table (its owner is {row[1]}), so the workers' "
        f"claims can read the whole queue after the first cycle: make {role} its owner "
        f"(ALTER TABLE queue OWNER TO {role}), or on PostgreSQL 17+ GRANT MAINTAIN ON queue TO {role}"
    ]


def has_table(connection: Connection, table: str) -> bool:
    """Whether this schema version has ``table`` (an older one may lack the newer tables)."""
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def counts(connection: Connection) -> dict[str, int]:
    """Rows of each table this schema version has (an older one may lack the newer tables)."""
    numbers = {}
    for table in COUNTED:
        if has_table(connection, table):
            row = connection.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            numbers[table] = int(row[0]) if row else 0
    return numbers


def record_problems(connection: Connection) -> list[str]:
    """Records digest would not read as written: checked as the TinyDB store's documents are."""
    problems = []
    for email, record in connection.execute("SELECT email, record FROM subscribers ORDER BY n"):
        problem = document_problem("subscribers", record)
        if problem:
            problems.append(f"subscriber {email}{problem}")
        elif record["email"].lower() != email:
            problems.append(f"subscriber {email}: its record names another address ({record['email']!r})")
        elif not record["rules"]:
            problems.append(f"subscriber {email} has no rules (nothing can match: add one with digest subscribe)")
    for table, key in (("sources", "name"), ("cycles", "id")):
        for name, record in connection.execute(f"SELECT {key}, record FROM {table} ORDER BY {key}".encode()):
            problem = document_problem(table, record)
            if problem:
                problems.append(f"{table} row {name}{problem}")
    return problems
