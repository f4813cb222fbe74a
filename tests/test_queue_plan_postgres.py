"""The workers' claim keeps a good plan from one cycle to the next.

A worker plans its claim once and keeps the plan (psycopg prepares a statement it runs often; a
statement without parameters is planned once for good). Between cycles the queue is empty, and
autovacuum analyses it so; a worker polling it then plans a scan of the whole queue and a sort,
and kept that plan into the next cycle: every claim read every queued row (4.5 ms a claim instead
of 0.7 at 10,000 queued, ``bench/postgres.md``). The scheduler's enqueue now analyses the queue,
which makes every worker plan its claim again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date

import psycopg
import pytest

from digest.state.postgres import queue as sql
from digest.state.postgres import store as postgres_store
from digest.state.postgres.queue import CLAIM
from digest.state.postgres.store import PostgresStore
from tests.postgres_server import postgres_server, postgres_url, url_of_a_role_not_owning_the_tables  # noqa: F401

QUEUED = 3000
DAY = date(2026, 12, 7)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:  # noqa: F811
    opened = PostgresStore(postgres_url)
    yield opened
    opened.close()


def rows(count: int) -> Iterator[sql.NewRow]:
    digest = {"entries": [{"id": f"2612.{n:05d}"} for n in range(20)]}
    return (sql.NewRow(f"d{n}", f"reader{n}@example.org", DAY, DAY, digest) for n in range(count))


def claim_plan(worker: psycopg.Connection[tuple[object, ...]]) -> str:
    return "\n".join(str(line[0]) for line in worker.execute("EXPLAIN EXECUTE claim").fetchall())


def a_worker_that_polled_the_empty_queue(store: PostgresStore) -> psycopg.Connection[tuple[object, ...]]:
    """The queue as it is between cycles (empty, and analysed so by autovacuum), and a worker's
    connection whose claim was planned while it polled it."""
    store.connection.execute("VACUUM ANALYZE queue")
    worker = psycopg.connect(store.url, autocommit=True)
    worker.execute(f"PREPARE claim AS {CLAIM}")
    for _ in range(6):
        assert worker.execute("EXECUTE claim").fetchone() is None
    return worker


def test_a_claim_planned_on_the_empty_queue_is_planned_again_once_the_scheduler_queues(
    store: PostgresStore,
) -> None:
    worker = a_worker_that_polled_the_empty_queue(store)
    try:
        assert sql.enqueue(store, rows(QUEUED)) == QUEUED
        plan = claim_plan(worker)
        assert "Index Scan using queue_pkey on queue" in plan and "Seq Scan on queue" not in plan, plan
    finally:
        worker.close()


def test_without_the_analyse_the_kept_plan_reads_the_whole_queue(store: PostgresStore) -> None:
    """What the test above guards against: the same rows queued without fresh statistics."""
    worker = a_worker_that_polled_the_empty_queue(store)
    try:
        store.connection.execute(
            "INSERT INTO queue (digest_id, email, as_of, window_start, digest)"
            " SELECT 'd' || n, 'reader' || n || '@example.org', %s, %s, '{}' FROM generate_series(1, %s) AS n",
            (DAY, DAY, QUEUED),
        )
        assert "Seq Scan on queue" in claim_plan(worker)
    finally:
        worker.close()


@pytest.fixture(autouse=True)
def no_warning_logged_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log's memory of warnings already logged (once an hour each) starts empty in each test."""
    monkeypatch.setattr(postgres_store, "_warned_at", {})


def test_a_role_that_may_not_analyse_the_queue_is_told_in_the_log(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue's ``ANALYZE`` needs the role that owns the table (digest's, when it made them). For
    another role PostgreSQL skips it with a warning, which psycopg keeps to itself: digest logs it,
    so an operator learns why claims got slow."""
    other = PostgresStore(url_of_a_role_not_owning_the_tables(store.url, "sender"))
    try:
        with caplog.at_level(logging.WARNING, logger="digest.state.postgres.store"):
            assert sql.enqueue(other, rows(3)) == 3
            assert sql.enqueue(other, rows(3)) == 0  # the next slice: the same warning, not logged again
    finally:
        other.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "digest.state.postgres.store"]
    assert len(warned) == 1 and warned[0].startswith("PostgreSQL warns: ") and '"queue"' in warned[0], warned
    assert sql.queued_count(store) == 3  # queued all the same


def test_an_analyse_skipped_for_a_lock_taken_is_not_a_warning_worth_a_line(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """``ANALYZE (SKIP_LOCKED)`` skips the queue while autovacuum holds it, on purpose: PostgreSQL
    still warns, and digest keeps that to itself."""
    vacuum = psycopg.connect(store.url)  # a transaction holding the lock autovacuum would
    try:
        vacuum.execute("LOCK TABLE queue IN SHARE UPDATE EXCLUSIVE MODE")
        with caplog.at_level(logging.DEBUG, logger="digest.state.postgres.store"):
            assert sql.enqueue(store, rows(3)) == 3
    finally:
        vacuum.close()
    assert not [r for r in caplog.records if r.name == "digest.state.postgres.store"]


def test_the_owner_analyses_the_queue_without_a_word(store: PostgresStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="digest.state.postgres.store"):
        assert sql.enqueue(store, rows(3)) == 3
    assert not [r for r in caplog.records if r.name == "digest.state.postgres.store"]
