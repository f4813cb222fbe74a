"""What ``digest status`` shows: the last cycles, each source's state, pending deliveries, next run.

Each source also shows the days it fetched late after downtime and the days it gave up on for
good (older than ``catchup_days``). Read from a snapshot of the store (no lock: status never waits
for a running cycle). Pending deliveries are what a cycle would send right now from the items
already stored — exactly the papers that matched but have not reached their subscriber yet (a
refused or interrupted send).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from digest.clock import cron_trigger, next_fire
from digest.cycle.steps import plan_from_store, window_days
from digest.mail.bounces import read_state as bounce_state
from digest.mail.quota import read_state
from digest.settings import Settings
from digest.state.store import Store


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
    # Digests the last cycle left for the next one because of a quota or throttling, and why.
    waiting: dict[str, Any] | None = None
    # Subscribers suspended after bounces (digest.mail.bounces): address → {"at", "why"}; `digest resume`.
    suspended: dict[str, Any] = field(default_factory=dict)


def format_time(moment: datetime | str | None, zone: str = "UTC") -> str:
    """The one way the CLI shows a time: ``2026-12-06 07:00 UTC``, in the schedule's time zone
    (the zone the operator thinks in), named. A naive time is UTC, as digest stores them."""
    if moment is None or moment == "":
        return "never"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def source_notes(source: dict[str, Any]) -> list[str]:
    """Lines under a source in ``digest status``: the days it fetched late after downtime, and the
    days it never will (too old for ``catchup_days``), so a loss is never only in a log."""
    notes = []
    caught_up = source.get("caught_up")
    if caught_up:
        notes.append(
            f"caught up after downtime: papers listed {span(caught_up)} were fetched late, "
            f"by the cycle as of {caught_up['as_of']}"
        )
    for lost in source.get("lost") or []:
        notes.append(f"not fetched, for good: papers listed {span(lost)} ({lost['why']}; cycle as of {lost['as_of']})")
    return notes


def span(run: dict[str, Any]) -> str:
    return f"on {run['from']}" if run["from"] == run["to"] else f"between {run['from']} and {run['to']}"


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
        waiting=read_state(settings.data_dir).get("waiting") if pending else None,
        suspended=bounce_state(settings.data_dir)["suspended"],
    )
