"""``digest migrate-store``: copy a TinyDB store into an empty PostgreSQL database, and check the counts.

Everything the TinyDB store keeps is copied: seen items (in the order first seen), item records,
subscribers and their votes, the delivery ledger (every delivered (address, item) pair, with the item's listing
day), departures, source state, delivery failures, cycle reports and the prune horizon. The copy is
one transaction: it lands whole or not at all. The TinyDB store is read under its lock (no cycle
runs meanwhile) with its journal replayed, and is left as it was: switching ``store.url`` is the
operator's step, and switching back is possible until the first PostgreSQL cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from digest.errors import StoreError
from digest.state.ledger import decode
from digest.state.postgres.store import PostgresStore
from digest.state.store import Store, store_lock

COPIED_TABLES = ("seen", "items", "subscribers", "votes", "deliveries", "departures", "sources", "failures", "cycles")


@dataclass(frozen=True, slots=True)
class Counts:
    seen: int = 0
    items: int = 0
    subscribers: int = 0
    votes: int = 0
    deliveries: int = 0
    departures: int = 0
    sources: int = 0
    failures: int = 0
    cycles: int = 0

    def describe(self) -> str:
        return ", ".join(f"{value} {name}" for name, value in asdict(self).items())


def tinydb_rows(source: Store) -> dict[str, list[tuple[Any, ...]]]:
    """The TinyDB store's content as rows of the PostgreSQL tables (reads its in-memory tables)."""
    seen = sorted(source._seen.items(), key=lambda pair: source._ordinal[pair[0]])
    deliveries = [
        (email, source._ids[ordinal], day, None, None)
        for email, days in source._ledger.days.items()
        for day, code in days.items()
        for ordinal in decode(code)
    ]
    return {
        "seen": [(item_id, day) for item_id, day in seen],
        "items": [(key, record["listed_on"], Jsonb(record)) for key, record in source._items.items()],
        "subscribers": [(key, Jsonb(person.to_record())) for key, person in source._subscribers.items()],
        "votes": [
            (email, paper, vote, at)
            for email, mine in source._votes.items()
            if email in source._subscribers  # a leaver's votes went with them
            for paper, (vote, at) in mine.items()
        ],
        "deliveries": deliveries,
        "departures": list(source._departures.items()),
        "sources": [(str(doc["name"]), Jsonb(dict(doc))) for doc in source.source_states()],
        "failures": [(str(doc["email"]), Jsonb(dict(doc))) for doc in source.failures()],
        "cycles": [(Jsonb(dict(doc)),) for doc in source.db.table("cycles").all()],
    }


INSERTS = {
    "seen": "INSERT INTO seen (id, listed_on) VALUES (%s, %s)",
    "items": "INSERT INTO items (id, listed_on, record) VALUES (%s, %s, %s)",
    "subscribers": "INSERT INTO subscribers (email, record) VALUES (%s, %s)",
    "votes": "INSERT INTO votes (email, paper, vote, at) VALUES (%s, %s, %s, %s)",
    "deliveries": "INSERT INTO deliveries (email, item_id, listed_on, digest_id, at) VALUES (%s, %s, %s, %s, %s)",
    "departures": "INSERT INTO departures (email, at) VALUES (%s, %s)",
    "sources": "INSERT INTO sources (name, record) VALUES (%s, %s)",
    "failures": "INSERT INTO failures (email, record) VALUES (%s, %s)",
    "cycles": "INSERT INTO cycles (record) VALUES (%s)",
}


def table_counts(target: PostgresStore) -> Counts:
    counts = {}
    for table in COPIED_TABLES:
        row = target.connection.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
        counts[table] = int(row[0]) if row else 0
    return Counts(**counts)


def copy_store(data_dir: Path, url: str, wait_seconds: float = 60) -> Counts:
    """Copy the TinyDB store in ``data_dir`` into the (empty) PostgreSQL store at ``url``; return the
    counts copied, checked against the database's. A :class:`StoreError` if the target is not
    empty or the counts differ (then nothing was copied)."""
    with store_lock(data_dir, wait_seconds):
        if not (data_dir / "digest.json").exists():
            raise StoreError(f"no TinyDB store to copy in {data_dir} (digest.json is missing)")
        source = Store(data_dir, writable=False)  # the journal replayed; nothing written back
        rows = tinydb_rows(source)
        horizon = source.prune_horizon
        target = PostgresStore(url, data_dir=None)
        try:
            already = table_counts(target)
            if any(asdict(already).values()):
                raise StoreError(
                    f"the PostgreSQL store {target.where} is not empty ({already.describe()}); "
                    "migrate-store copies into an empty database only"
                )
            expected = Counts(**{table: len(rows[table]) for table in COPIED_TABLES})
            with target.connection.transaction(), target.connection.cursor() as cursor:
                for table in COPIED_TABLES:
                    if rows[table]:
                        cursor.executemany(INSERTS[table].encode(), rows[table])
                if horizon is not None:
                    cursor.execute("INSERT INTO meta VALUES ('prune_horizon', %s)", (horizon.isoformat(),))
                found = table_counts(target)
                if found != expected:  # raising rolls the copy back
                    raise StoreError(
                        f"the copy into {target.where} does not add up (expected {expected.describe()}; "
                        f"found {found.describe()}); nothing was copied"
                    )
        finally:
            target.close_connection()
    return expected
