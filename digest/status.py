"""What ``digest status`` shows: the last cycles, each source's state, pending deliveries, next run.

Read from a snapshot of the store (no lock: status never waits for a running cycle). Pending
deliveries are what a cycle would send right now from the items already stored — exactly the
papers that matched but have not reached their subscriber yet (a refused or interrupted send).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from digest.pipeline import plan_from_store, window_days
from digest.schedule import cron_trigger, next_fire
from digest.settings import Settings
from digest.store import Store


@dataclass(slots=True)
class Pending:
    email: str
    papers: int
    failure: dict[str, Any] | None = None


@dataclass(slots=True)
class Status:
    cycles: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    pending: list[Pending] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    next_run: datetime | None = None


def gather(settings: Settings, store: Store, today: date, now: datetime, last: int = 10) -> Status:
    window_start = min(window_days(today, settings.sources.hf_papers.lookback_days))
    plan = plan_from_store(store, window_start, today)
    failures = {f["email"]: f for f in store.failures()}
    pending = [Pending(d.subscriber.email, len(d.entries), failures.get(d.subscriber.email)) for d in plan.digests]
    trigger = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
    return Status(
        cycles=store.cycles(last=last),
        sources=store.source_states(),
        pending=sorted(pending, key=lambda p: p.email),
        failures=list(failures.values()),
        next_run=next_fire(trigger, now),
    )
