"""The PostgreSQL store's tables, as numbered migrations applied in order when a store is opened.

Each migration is a list of SQL statements; they run in one transaction with the version bump, under
a transaction-level advisory lock, so two processes opening a new database at once apply each step
once, and a failed step leaves the database as it was. A database written by a newer digest (a
version above :data:`SCHEMA_VERSION`) is refused rather than guessed at, as the TinyDB store does.

Tables (version 1):
- ``meta``: ``prune_horizon`` (ISO date) and ``flushed_at``.
- ``seen``: every item id ever fetched and the date it was first listed (never pruned); ``n`` is
  the order it was first seen in.
- ``items``: the full record (JSON) of items listed within ``retention_days``.
- ``subscribers``: the lower-cased address, the record (JSON, :meth:`Subscriber.to_record`), ``n``
  the order of first subscription.
- ``deliveries``: the delivery ledger, one row per subscriber and item delivered, its primary key
  ``(email, item_id)``: "at most once" is a constraint. ``listed_on`` is the item's listing day
  (pruned by it, read by it); ``digest_id`` and ``at`` are null for rows copied from a TinyDB store,
  whose ledger kept neither.
- ``departures``: when each address that ever unsubscribed last did.
- ``sources``, ``failures``: per source and per address, the record the TinyDB store keeps.
- ``cycles``: the last reports (JSON), by ``id``.

Version 2 (the roles of ``digest scheduler`` / ``digest worker``, :mod:`digest.state.postgres.queue`):
- ``queue``: one row per planned digest the scheduler's cycle left for the workers: the digest to
  render (JSON), the window its subscriber moves to once it is sent, ``attempts`` and
  ``not_before`` (a transient refusal waits there). ``UNIQUE (digest_id, email)``: a cycle run
  again for the same day queues nothing twice.
- ``send_pace``: one row per relay limit the workers share: the next free slot of the per-second
  rate, and the sends counted per minute for the hour and day quotas (``send_minutes``).

Version 3: ``votes``, "more like this" / "not for me" per subscriber and paper.

Version 4: ``signup_mails``, the sign-up form's per-mailbox mail limit, shared by every web
replica (:mod:`digest.state.postgres.limits`): ``key`` is a keyed hash of the mailbox (never the
address), ``sent`` the times of the confirmation mails within the window, ``last`` the latest.
"""

from __future__ import annotations

import psycopg

from digest.errors import StoreError

VERSION_TABLE = "digest_schema"
MIGRATE_LOCK = 0x64696765_7374_0001  # pg_advisory_xact_lock key: "dige" "st" 1

MIGRATIONS: list[list[str]] = [
    # 1: the first schema
    [
        "CREATE TABLE meta (key text PRIMARY KEY, value text)",
        "CREATE TABLE seen (id text PRIMARY KEY, listed_on date NOT NULL, n bigserial NOT NULL)",
        "CREATE TABLE items (id text PRIMARY KEY, listed_on date NOT NULL, record jsonb NOT NULL)",
        "CREATE INDEX items_by_listed_on ON items (listed_on)",
        "CREATE TABLE subscribers (email text PRIMARY KEY, record jsonb NOT NULL, n bigserial NOT NULL)",
        """CREATE TABLE deliveries (
            email text NOT NULL,
            item_id text NOT NULL,
            listed_on date NOT NULL,
            digest_id text,
            at timestamptz,
            PRIMARY KEY (email, item_id)
        )""",
        "CREATE INDEX deliveries_by_day ON deliveries (email, listed_on)",
        "CREATE INDEX deliveries_by_listed_on ON deliveries (listed_on)",
        "CREATE TABLE departures (email text PRIMARY KEY, at timestamptz NOT NULL)",
        "CREATE TABLE sources (name text PRIMARY KEY, record jsonb NOT NULL)",
        "CREATE TABLE failures (email text PRIMARY KEY, record jsonb NOT NULL)",
        "CREATE TABLE cycles (id bigserial PRIMARY KEY, record jsonb NOT NULL)",
    ],
    # 2: the queue between the scheduler and the workers, and the relay limits they share
    [
        """CREATE TABLE queue (
            id bigserial PRIMARY KEY,
            digest_id text NOT NULL,
            email text NOT NULL,
            as_of date NOT NULL,
            window_start date NOT NULL,
            digest jsonb NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            not_before timestamptz NOT NULL DEFAULT now(),
            last_error text,
            queued_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (digest_id, email)
        )""",
        "CREATE INDEX queue_by_email ON queue (email)",
        "CREATE TABLE send_pace (name text PRIMARY KEY, next_at timestamptz NOT NULL)",
        "CREATE TABLE send_minutes (minute timestamptz PRIMARY KEY, sent integer NOT NULL)",
    ],
    # 3: "more like this" / "not for me" votes, gone with their subscriber
    [
        """CREATE TABLE votes (
            email text NOT NULL REFERENCES subscribers (email) ON DELETE CASCADE,
            paper text NOT NULL,
            vote smallint NOT NULL CHECK (vote IN (-1, 1)),
            at timestamptz NOT NULL,
            PRIMARY KEY (email, paper)
        )""",
    ],
    # 4: the sign-up form's per-mailbox mail limit, one for all web replicas
    [
        "CREATE TABLE signup_mails (key text PRIMARY KEY, sent timestamptz[] NOT NULL, last timestamptz NOT NULL)",
        "CREATE INDEX signup_mails_by_last ON signup_mails (last)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    """The version of the digest schema in this database (0: none yet)."""
    exists = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return 0
    row = connection.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
    return int(str(row[0])) if row else 0


def migrate(connection: psycopg.Connection[tuple[object, ...]], where: str, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` (``target``: to an older one, as ``digest restore``
    loads a backup at its own version first); return the version it had. ``where`` names it in
    messages (the URL without its password)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        found = schema_version(connection)
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"store {where} has schema version {found}, written by a newer digest; this one reads up to "
                f"version {SCHEMA_VERSION}. Upgrade digest (the database was left untouched)."
            )
        if found == 0:
            connection.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
            connection.execute(f"INSERT INTO {VERSION_TABLE} VALUES (0)")
        for version in range(found, target):
            for statement in MIGRATIONS[version]:
                connection.execute(statement.encode())
            connection.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (version + 1,))
    return found
