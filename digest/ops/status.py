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
from digest.cycle.coverage import HISTORY_CYCLES, quiet_sources
from digest.cycle.days import window_days
from digest.cycle.plan import plan_from_store
from digest.cycle.rhythm import Outlook, outlook
from digest.mail.bounces import read_state as bounce_state
from digest.mail.quota import read_state
from digest.settings import Settings, settings_file_description
from digest.state.backend import StoreBackend


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
    # Sources that answered the last cycle with nothing though they usually list papers: name → why.
    quiet: dict[str, str] = field(default_factory=dict)
    # Per kind of rhythm (digest.cycle.rhythm): how many, how many due now, when the next is due.
    rhythms: list[Outlook] = field(default_factory=list)
    feed_only: int = 0


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


def gather(settings: Settings, store: StoreBackend, today: date, now: datetime, last: int = 10) -> Status:
    window_start = min(window_days(today, settings.lookback_days))
    plan = plan_from_store(store, window_start, today)
    failures = {f["email"]: f for f in store.failures()}
    pending = [Pending(d.subscriber.email, len(d.entries), failures.get(d.subscriber.email)) for d in plan.digests]
    trigger = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
    people = store.subscribers(active_only=True)
    return Status(
        rhythms=outlook(people, now, trigger),
        feed_only=sum(1 for s in people if not s.by_email),
        cycles=store.cycles(last=last),
        sources=store.source_states(),
        pending=sorted(pending, key=lambda p: p.email),
        failures=list(failures.values()),
        next_run=next_fire(trigger, now),
        waiting=read_state(settings.data_dir).get("waiting") if pending else None,
        suspended=bounce_state(settings.data_dir)["suspended"],
        quiet=quiet_sources(
            store.cycles(last=HISTORY_CYCLES),
            settings.lookback_days,
            settings.sources.arxiv.categories,
        ),
    )


def outcome(cycle: dict[str, Any]) -> str:
    if cycle.get("dry_run"):
        return "dry run"
    if cycle.get("ok"):
        return "ok"
    if cycle.get("stopped"):
        return f"stopped, {cycle.get('pending', 0)} digest(s) left"
    return "failed"


def cycle_lines(cycles: list[dict[str, Any]], zone: str) -> list[str]:
    lines = [f"last {len(cycles)} cycle(s):" if cycles else "no cycle has run yet"]
    for cycle in cycles:
        sources = ", ".join(
            f"{s['name']} ok" if s["ok"] else f"{s['name']} down ({', '.join(s['days_failed'])})"
            for s in cycle["sources"]
        )
        numbers = ", ".join(f"{k} {cycle[k]}" for k in ("fetched", "new", "matched", "sent", "failed"))
        lines.append(
            f"  {format_time(cycle['started_at'], zone)} {cycle.get('trigger', 'manual')} as of {cycle['as_of']}: "
            f"{outcome(cycle)}; {numbers}; sources: {sources or 'none'}"
        )
    return lines


def source_lines(state: Status, zone: str) -> list[str]:
    lines = []
    for source in state.sources:
        waiting = source.get("failed_days") or []
        line = f"source {source['name']}: last success {format_time(source.get('last_ok_at'), zone)}"
        if waiting:
            line += f"; days to fetch again: {', '.join(waiting)} (last error: {source.get('last_error')})"
        lines.append(line)
        lines.extend(f"  {note}" for note in source_notes(source))
    lines.extend(f"source {name}: unusually empty: {why}" for name, why in state.quiet.items())
    return lines


def pending_lines(state: Status) -> list[str]:
    if not state.pending:
        return ["pending: nothing (every matched paper has been delivered)"]
    lines = [f"pending: {sum(p.papers for p in state.pending)} paper(s) for {len(state.pending)} subscriber(s)"]
    if state.waiting:  # left by the last cycle because of a quota or throttling (digest.mail.quota)
        lines.append(f"  {state.waiting['count']} digest(s) wait for the next cycle: {state.waiting['why']}")
    for item in state.pending:
        why = f" — last refusal: {item.failure['reason']}" if item.failure else ""
        lines.append(f"  {item.email}: {item.papers} paper(s){why}")
    return lines


def rhythm_lines(state: Status, zone: str) -> list[str]:
    """One line per kind of rhythm: ``daily at their own hour: 3 subscriber(s), next due …``."""
    lines = []
    for kind in state.rhythms:
        now = f", {kind.due_now} due now (next hourly tick)" if kind.due_now else ""
        upcoming = f", next due {format_time(kind.next_at, zone)} ({kind.next_count})" if kind.next_at else ""
        lines.append(f"rhythm {kind.kind}: {kind.people} subscriber(s){now}{upcoming}")
    if state.feed_only:
        lines.append(f"rhythm feed only: {state.feed_only} subscriber(s), no email")
    return lines


def status_lines(settings: Settings, state: Status) -> list[str]:
    """``digest status``'s output, line by line: settings, cycles, sources, pending, suspended, next run."""
    zone = settings.schedule.timezone
    return [
        f"{settings_file_description()}; data_dir {settings.data_dir.absolute()}",
        *cycle_lines(state.cycles, zone),
        *source_lines(state, zone),
        *pending_lines(state),
        *rhythm_lines(state, zone),
        *(
            f"suspended: {email} since {why['at'][:16]}: {why['why']} (digest resume {email})"
            for email, why in sorted(state.suspended.items())  # after bounces; digest resume EMAIL
        ),
        f"next scheduled run: {format_time(state.next_run, zone)} (schedule.cron {settings.schedule.cron!r})",
    ]
