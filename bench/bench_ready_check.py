"""The worker's ready check (``has_ready``, asked before each email when relay limits are set) as
a cycle goes on: the rows sent stay in the queue's table, dead, until vacuum.

A real PostgreSQL (:mod:`tests.postgres_server`), ``--queued`` rows of a 37-paper digest's JSON
queued by digest's own :func:`enqueue`, then the oldest sent (deleted in id order, as workers do)
in steps; at each step the check as it is (``EXISTS``: a scan from the table's first page, or
from where the last scan of a big table left off) and the claim's path (the oldest id through the
index): milliseconds a call (median of 50) and the
pages it touched (``EXPLAIN (ANALYZE, BUFFERS)``). Figures, never assertions:

    python -m bench.bench_ready_check [--queued 50000]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Sequence
from datetime import date

import psycopg

from digest.state.postgres import queue as sql
from digest.state.postgres.store import PostgresStore

# The claim's path, tried instead of the check as it is (sql.HAS_READY) and not kept (bench/postgres.md).
BY_THE_OLDEST_ID = "SELECT 1 FROM queue WHERE not_before <= now() ORDER BY id LIMIT 1"
DAY = date(2026, 12, 7)


def digest_json(n: int) -> dict[str, object]:
    entries = [{"id": f"2612.{p:05d}", "matches": [["video diffusion", [["abstract", 10, 25]]]]} for p in range(37)]
    return {"digest_id": f"d{n}", "as_of": DAY.isoformat(), "entries": entries}


def measure(connection: psycopg.Connection[tuple[object, ...]], statement: str) -> tuple[float, int]:
    for _ in range(5):  # as a worker's: prepared, and the index entries of sent rows seen before
        connection.execute(statement, prepare=True).fetchone()
    times = []
    for _ in range(50):
        start = time.perf_counter()
        connection.execute(statement, prepare=True).fetchone()
        times.append(time.perf_counter() - start)
    plan = "\n".join(str(r[0]) for r in connection.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}").fetchall())
    found = re.search(r"Buffers: shared( hit=(\d+))?( read=(\d+))?", plan)
    pages = int(found.group(2) or 0) + int(found.group(4) or 0) if found else -1
    return statistics.median(times) * 1000, pages


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queued", type=int, default=50_000)
    args = parser.parse_args(argv)

    from tests.postgres_server import PostgresServer, postgres_bin

    binaries = postgres_bin()
    if binaries is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql package")
    server = PostgresServer(binaries).start()
    try:
        store = PostgresStore(server.new_database())
        rows = (sql.NewRow(f"d{n}", f"reader{n}@example.org", DAY, DAY, digest_json(n)) for n in range(args.queued))
        sql.enqueue(store, rows)
        connection = psycopg.connect(store.url, autocommit=True)
        table = connection.execute("SELECT pg_relation_size('queue') / 8192").fetchone()
        print(f"{args.queued:,} queued, {table[0] if table else '?'} pages")
        sent = 0
        for fraction in (0.0, 0.2, 0.5, 0.9):
            step = int(args.queued * fraction) - sent
            connection.execute("DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT %s)", (step,))
            sent += step
            before, now = measure(connection, sql.HAS_READY), measure(connection, BY_THE_OLDEST_ID)
            print(
                f"  {sent:>7,} sent: EXISTS {before[0]:.3f} ms, {before[1]} pages;"
                f" by the oldest id {now[0]:.3f} ms, {now[1]} pages"
            )
        connection.close()
        store.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
