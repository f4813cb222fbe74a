"""``digest scheduler`` plans and queues a slice of subscribers at a time (``QUEUE_SLICE``), each
slice committed on its own, against a real PostgreSQL and a real SMTP server: every slice queued,
workers send the first slice while the rest is still being planned, and a scheduler that dies
between two slices loses nobody and doubles nothing when the cycle runs again."""

from __future__ import annotations

import collections
import gc
from collections.abc import Callable
from typing import Any

import pytest

from digest.cycle import queue as cycle_queue
from digest.cycle import steps
from digest.cycle.run import run_once
from digest.settings import Settings
from digest.sources.sample import SampleSource
from digest.state.postgres import queue as sql
from digest.state.postgres.store import PostgresStore
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_roles_postgres import AS_OF, PEOPLE, env, received, settings, subscribe_all, workers  # noqa: F401

SLICE = 5  # 24 people: five slices, the last one short
REAL_ENQUEUE = cycle_queue.enqueue_plan


def queued(url: str) -> int:
    store = PostgresStore(url)
    try:
        return sql.queued_count(store)
    finally:
        store.close()


def spy_on_slices(monkeypatch: pytest.MonkeyPatch, each: Callable[[int], None]) -> list[int]:
    """Count the digests of each slice the scheduler queues; ``each(n)`` runs before slice n is queued."""
    sizes: list[int] = []

    def enqueue(store: Any, plan: Any, run: Any, receipt: str) -> int:
        each(len(sizes))
        sizes.append(len(plan.digests))
        return REAL_ENQUEUE(store, plan, run, receipt)

    monkeypatch.setattr(steps, "QUEUE_SLICE", SLICE)
    monkeypatch.setattr(cycle_queue, "enqueue_plan", enqueue)
    return sizes


def test_the_scheduler_queues_a_slice_at_a_time_and_workers_start_on_the_first(
    settings: Settings,  # noqa: F811
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscribe_all(settings.store.url)
    sent_early: list[int] = []
    collector_on: list[bool] = []

    def before(slice_number: int) -> None:
        collector_on.append(gc.isenabled())  # paused while a slice's records are made and queued
        if slice_number == 1:  # the first slice is committed: a worker can send it now, mid-cycle
            sent_early.extend(workers(settings, 1))

    sizes = spy_on_slices(monkeypatch, before)
    report = run_once(settings, AS_OF, sources=[SampleSource()], enqueue=True)
    assert not report.errors, report.errors
    assert sizes == [5, 5, 5, 5, 4], sizes
    assert collector_on == [False] * 5 and gc.isenabled()
    assert sent_early == [SLICE], "the first slice went out before the second was queued"
    assert report.matched > 0 and report.stages.get("match", 0) > 0 and "send" in report.stages
    assert queued(settings.store.url) == len(PEOPLE) - SLICE
    workers(settings, 2)
    assert received(smtp) == {email: 1 for email in PEOPLE}
    assert queued(settings.store.url) == 0


def test_a_scheduler_that_dies_between_slices_loses_nobody_and_doubles_nothing(
    settings: Settings,  # noqa: F811
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscribe_all(settings.store.url)

    def die_on_the_third(slice_number: int) -> None:
        if slice_number == 2:
            raise RuntimeError("the scheduler's host went away")

    spy_on_slices(monkeypatch, die_on_the_third)
    with pytest.raises(RuntimeError):
        run_once(settings, AS_OF, sources=[SampleSource()], enqueue=True)
    assert gc.isenabled(), "the collector is on again after a slice that failed"
    assert queued(settings.store.url) == 2 * SLICE, "the two slices queued before it died stay queued"
    workers(settings, 1)  # a worker sends them meanwhile

    sizes = spy_on_slices(monkeypatch, lambda _: None)
    report = run_once(settings, AS_OF, sources=[SampleSource()], enqueue=True)
    assert not report.errors, report.errors
    assert sum(sizes) == len(PEOPLE) - 2 * SLICE, sizes  # those already sent: nothing left to plan
    workers(settings, 2)
    assert received(smtp) == collections.Counter({email: 1 for email in PEOPLE})
