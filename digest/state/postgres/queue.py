"""The queue between ``digest scheduler`` and ``digest worker`` on a PostgreSQL store, and the relay
limits the workers share (schema version 2, :mod:`digest.state.postgres.schema`).

- The scheduler's cycle plans as ever and, instead of sending, :func:`enqueue` inserts one row per
  digest (``UNIQUE (digest_id, email)``: a cycle run again for the same day queues nothing twice).
  A newer digest for an address replaces an older one still waiting (it holds the older one's
  papers, which are not delivered yet), unless a worker is sending the older one right now.
- A worker, in one transaction: :func:`claim` takes the oldest ready row with ``FOR UPDATE SKIP
  LOCKED`` (any number of workers, none waits for another) and, in the same statement, locks the
  person's row (two digests of one address never go out at once, and an unsubscribe waits for the
  send in progress); :func:`delivered_among` reads what they got meanwhile (a statement of its own:
  its snapshot is taken after the lock, so it sees a send that held the lock before); it sends, and
  :func:`finish_sent` records the deliveries (``ON CONFLICT DO NOTHING``), their progress, and
  deletes the row; commit. Killed mid-send, its transaction aborts and the row is free again for
  another worker: only an email whose "250" came before the kill is sent twice. Five round trips an
  email (begin, claim, delivered, finish, commit), no savepoints: they were eleven.
- :func:`take_slot`: the per-second rate and the hour/day quotas, counted in the database (one
  short transaction under an advisory lock), so they hold for all workers together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from digest.models import Item, Subscriber
from digest.state.postgres.store import PostgresStore, connect

PACE_LOCK = 0x64696765_7374_0003  # pg_advisory_xact_lock key: the send pace and quotas
HOUR, DAY = 3600, 86400
ENQUEUE_BATCH = 2000  # rows per INSERT of enqueue (all in its one transaction)


@dataclass(frozen=True, slots=True)
class Queued:
    """One row of the queue: a planned digest (its JSON record) waiting for a worker."""

    id: int
    digest_id: str
    email: str
    as_of: date
    window_start: date
    digest: dict[str, Any]
    attempts: int
    subscriber: dict[str, Any] | None = None  # their current record, locked with the row (None: they left)


@dataclass(frozen=True, slots=True)
class NewRow:
    digest_id: str
    email: str
    as_of: date
    window_start: date
    digest: dict[str, Any]


def batched(rows: Iterable[NewRow], size: int) -> Iterator[list[NewRow]]:
    """``rows`` ``size`` at a time (``itertools.batched`` is Python 3.12's)."""
    batch: list[NewRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def enqueue(store: PostgresStore, rows: Iterable[NewRow]) -> int:
    """Queue ``rows`` in one transaction; return how many were new (a re-run queues nothing twice).

    Taken :data:`ENQUEUE_BATCH` at a time (one address appears once), so only a batch of rows and
    their JSON is ever in memory: a 100,000-subscriber plan's rows at once were gigabytes."""
    inserted = 0
    with store.transaction() as connection:
        for batch in batched(rows, ENQUEUE_BATCH):
            emails = [row.email.lower() for row in batch]
            ids = [row.digest_id for row in batch]
            connection.execute(  # superseded: an older digest still waiting, not being sent right now
                "DELETE FROM queue WHERE id IN (SELECT id FROM queue WHERE email = ANY(%s) "
                "AND NOT digest_id = ANY(%s) FOR UPDATE SKIP LOCKED)",
                (emails, ids),
            )
            inserted += max(  # (-1 where unknown: counted as none)
                0,
                connection.execute(  # one JSON document a batch: arrays of jsonb are escaped value by value
                    "INSERT INTO queue (digest_id, email, as_of, window_start, digest) "
                    "SELECT r->>0, r->>1, (r->>2)::date, (r->>3)::date, r->4 FROM jsonb_array_elements(%s) AS r "
                    "ON CONFLICT (digest_id, email) DO NOTHING",
                    (
                        Jsonb(
                            [
                                [r.digest_id, email, r.as_of.isoformat(), r.window_start.isoformat(), r.digest]
                                for r, email in zip(batch, emails, strict=True)
                            ]
                        ),
                    ),
                ).rowcount,
            )
        # Fresh statistics for the workers' claim, which each worker plans once and keeps (psycopg
        # prepares a statement it runs often). Planned while it polled the empty queue that
        # autovacuum analysed after the last cycle, the claim is a scan of the whole queue and a
        # sort; this drops that plan for every worker (a claim took 4.5 ms instead of 0.7 at
        # 10,000 queued: bench/postgres.md). Of the id column alone, so no digest's JSON is read;
        # skipped, not waited for, while a vacuum of the queue holds its lock.
        connection.execute("ANALYZE (SKIP_LOCKED) queue (id)")
    return inserted


def queued_count(store: PostgresStore) -> int:
    with store.transaction() as connection:
        row = connection.execute("SELECT count(*) FROM queue").fetchone()
    return int(row[0]) if row else 0


def queue_summary(store: PostgresStore) -> tuple[int, datetime | None, int]:
    """``digest status``: (digests waiting, when the oldest was queued, how many a refusal postponed)."""
    row = store.connection.execute("SELECT count(*), min(queued_at), count(*) FILTER (WHERE attempts > 0) FROM queue")
    found = row.fetchone()
    return (int(found[0]), found[1], int(found[2])) if found else (0, None, 0)


CLAIM = (  # the oldest ready row and, locked with it, its subscriber's record (None once they left)
    "SELECT q.id, q.digest_id, q.email, q.as_of, q.window_start, q.digest, q.attempts, s.record FROM "
    "(SELECT * FROM queue WHERE not_before <= now() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) AS q "
    "LEFT JOIN LATERAL (SELECT record FROM subscribers WHERE email = q.email FOR UPDATE) AS s ON true"
)


def claim(store: PostgresStore) -> Queued | None:
    """The oldest ready row and its subscriber's record, both locked until the caller's transaction
    (:meth:`PostgresStore.transaction`) ends."""
    row = store.connection.execute(CLAIM).fetchone()
    return Queued(*row) if row else None


# A scan from the table's first page, through the rows sent this cycle (dead until vacuumed), or
# from where the last scan of a big table left off; measured against the claim's path, the oldest
# id through the index, and left as it is (bench/postgres.md, "afternoon").
HAS_READY = "SELECT EXISTS (SELECT 1 FROM queue WHERE not_before <= now())"


def has_ready(store: PostgresStore) -> bool:
    """Whether a row is ready to send (a worker asks before it takes a slot of the relay's limits)."""
    row = store.connection.execute(HAS_READY).fetchone()
    return bool(row and row[0])


def deliver_asynchronously(store: PostgresStore) -> None:
    """A worker's transactions commit as :meth:`PostgresStore.record_note`'s do (asynchronously:
    durable within the WAL writer's fraction of a second), set once for its connection instead of
    a ``SET LOCAL`` in each."""
    store.connection.execute("SET synchronous_commit = off")
    # The claim and its reads rely on READ COMMITTED, which every connection sets (store.connect).


def delivered_among(store: PostgresStore, email: str, item_ids: Sequence[str]) -> set[str]:
    rows = store.connection.execute(
        "SELECT item_id FROM deliveries WHERE email = %s AND item_id = ANY(%s)", (email.lower(), list(item_ids))
    ).fetchall()
    return {row[0] for row in rows}


def items_by_id(store: PostgresStore, item_ids: Sequence[str]) -> dict[str, Item]:
    """The stored papers among ``item_ids`` (those pruned since are missing)."""
    rows = store.connection.execute("SELECT id, record FROM items WHERE id = ANY(%s)", (list(item_ids),)).fetchall()
    return {row[0]: Item.from_record(row[1]) for row in rows}


def hand_back(store: PostgresStore, email: str, before: str | None, stamp: str) -> None:
    """The person's rhythm mark back to ``before``, if it is still the ``stamp`` their queueing set
    (a later cycle's mark stays)."""
    store.connection.execute(
        "UPDATE subscribers SET record = jsonb_set(record, '{handled_at}', %s) WHERE email = %s"
        " AND record->>'handled_at' = %s",
        (Jsonb(before), email, stamp),
    )


def finish(store: PostgresStore, row_id: int) -> None:
    store.connection.execute("DELETE FROM queue WHERE id = %s", (row_id,))


def finish_sent(store: PostgresStore, job: Queued, subscriber: Subscriber, items: dict[str, str], at: datetime) -> None:
    """After a send, in one statement: the deliveries (``items``: id → listed day) in the ledger,
    the subscriber's record (read locked by :func:`claim`, its progress moved) saved, their failure
    cleared and the row deleted (they were four calls, savepoints and ten round trips). Unlike
    :meth:`PostgresStore.record_note`, nothing goes to ``seen``: a worker's papers come from the
    ``items`` table, which holds only papers the fetch also wrote to ``seen`` (a probe a paper)."""
    email = subscriber.email.lower()
    store.connection.execute(
        "WITH u AS (SELECT key AS i, value::date AS d FROM jsonb_each_text(%(items)s)), "
        "delivered AS (INSERT INTO deliveries (email, item_id, listed_on, digest_id, at) "
        "SELECT %(email)s, i, d, %(digest)s, %(at)s FROM u ON CONFLICT (email, item_id) DO NOTHING), "
        "progress AS (UPDATE subscribers SET record = %(record)s WHERE email = %(email)s), "
        "cleared AS (DELETE FROM failures WHERE email = %(email)s) "
        "DELETE FROM queue WHERE id = %(row)s",
        {
            "items": Jsonb(items),
            "email": email,
            "digest": job.digest_id,
            "at": at,
            "record": Jsonb(subscriber.to_record()),
            "row": job.id,
        },
    )


def postpone(store: PostgresStore, row_id: int, error: str, seconds: float) -> None:
    """Try the row again in ``seconds`` (a transient refusal), counting the attempt."""
    store.connection.execute(
        "UPDATE queue SET attempts = attempts + 1, last_error = %s, "
        "not_before = now() + make_interval(secs => %s) WHERE id = %s",
        (error, seconds, row_id),
    )


def take_slot(
    store: PostgresStore, per_second: float | None, per_hour: int | None, per_day: int | None
) -> tuple[float, str | None]:
    """Ask for one send: ``(seconds to wait first, None)``, or ``(0, why)`` when a quota is full.

    Counted before the send (a crash over-counts by one, never lets the relay see more than its
    limit), per minute in ``send_minutes`` for the rolling hour and day; the per-second rate hands
    out slots ``1 / per_second`` apart to all workers together (``send_pace``). With no limit at all
    there is nothing to count (and no transaction for it)."""
    if per_second is None and per_hour is None and per_day is None:
        return 0.0, None
    with store.transaction() as connection:
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (PACE_LOCK,))
        for limit, window, name in ((per_hour, HOUR, "hour"), (per_day, DAY, "day")):
            if limit is None:
                continue
            used = connection.execute(
                "SELECT coalesce(sum(sent), 0) FROM send_minutes "
                "WHERE minute > date_trunc('minute', clock_timestamp()) - make_interval(secs => %s)",
                (window,),
            ).fetchone()
            if used and int(used[0]) >= limit:
                return 0.0, f"the relay's limit of {limit} emails per {name} is reached (smtp.max_per_{name})"
        wait = 0.0
        if per_second:
            row = connection.execute(
                "INSERT INTO send_pace VALUES ('second', clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (name) DO UPDATE SET next_at = greatest(send_pace.next_at, clock_timestamp()) "
                "+ make_interval(secs => %s) "
                "RETURNING extract(epoch FROM next_at - clock_timestamp()) - %s",
                (1 / per_second, 1 / per_second, 1 / per_second),
            ).fetchone()
            wait = max(0.0, float(row[0])) if row else 0.0
        if per_hour is not None or per_day is not None:
            connection.execute(
                "INSERT INTO send_minutes VALUES (date_trunc('minute', clock_timestamp()), 1) "
                "ON CONFLICT (minute) DO UPDATE SET sent = send_minutes.sent + 1"
            )
            connection.execute("DELETE FROM send_minutes WHERE minute < clock_timestamp() - interval '1 day 1 minute'")
    return wait, None


SCHEDULER_LOCK = 0x64696765_7374_0004  # pg_try_advisory_lock key: "a scheduler is starting a cycle"


@contextmanager
def scheduler_turn(url: str) -> Iterator[bool]:
    """Whether this scheduler has the turn (no other is deciding or running a cycle right now): a
    session-level advisory lock on a connection of its own, released when the block ends (or the
    process dies). The one that has it checks that no cycle ran since the fire time, then runs one."""
    connection = connect(url)
    try:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (SCHEDULER_LOCK,)).fetchone()
        yield bool(row and row[0])
    finally:
        connection.close()
