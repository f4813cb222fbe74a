"""Which days a cycle covers: the look-back window, each source's days to fetch, the days lost for
good, and the guards that keep a clock that ran ahead from moving any of them.

Pure functions of dates, so the promise "nothing lost within ``catchup_days``" (SPEC.md) can be
checked by property tests without a store or a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from digest.models import Subscriber


def window_days(as_of: date, lookback_days: int) -> list[date]:
    """The look-back window that ends on ``as_of``, oldest day first."""
    return [as_of - timedelta(days=k) for k in reversed(range(lookback_days))]


def catch_up_days(failed: Sequence[date], as_of: date, catchup_days: int) -> tuple[list[date], list[date]]:
    """Split a source's failed days into those fetched again now and those too old to chase."""
    oldest = as_of - timedelta(days=catchup_days)
    keep = [d for d in failed if d > oldest]
    return keep, [d for d in failed if d <= oldest]


@dataclass(frozen=True, slots=True)
class SourceDays:
    """The days a cycle asks one source for (:func:`source_days`), and the days it never will."""

    fetch: list[date]
    caught_up: list[date] = field(default_factory=list)  # no cycle ran then (downtime); fetched now
    not_fetched: list[date] = field(default_factory=list)  # no cycle ran then, and older than catchup_days: lost
    given_up: list[date] = field(default_factory=list)  # failed for catchup_days: lost


def source_days(
    as_of: date, lookback_days: int, catchup_days: int, failed: Sequence[date], fetched_through: date | None
) -> SourceDays:
    """Which days to ask one source for: the look-back window, the days it failed on (retried for
    ``catchup_days``), and every day since the last cycle that fetched it (``fetched_through``),
    so that days when digest was not running are not lost either.

    Never a day after ``as_of``, and nothing ``catchup_days`` or more back but the look-back window
    itself: older days are returned as lost, for the cycle to say so. The first cycle ever
    (``fetched_through`` None) asks for the look-back window alone, and so does a cycle whose
    ``fetched_through`` lies ahead of ``as_of`` (a clock that ran ahead, or a re-run of an old date).
    """
    window = set(window_days(as_of, lookback_days))
    oldest = as_of - timedelta(days=catchup_days)  # this day and earlier are not chased
    owed = sorted({d for d in failed if d <= as_of})  # a day past as_of comes with the look-back in time
    retry, given_up = catch_up_days(owed, as_of, catchup_days)
    missed: list[date] = []
    if fetched_through is not None and fetched_through < as_of:
        start = max(fetched_through, oldest)
        missed = [start + timedelta(days=k) for k in range(1, (as_of - start).days + 1)]
    caught_up = [d for d in missed if d not in window and d not in owed]
    not_fetched: list[date] = []
    if fetched_through is not None and fetched_through < oldest:
        first, last = fetched_through + timedelta(days=1), min(oldest, min(window) - timedelta(days=1))
        not_fetched = [first + timedelta(days=k) for k in range((last - first).days + 1)]
        not_fetched = [d for d in not_fetched if d not in owed]
    return SourceDays(
        fetch=sorted(window | set(retry) | set(caught_up)),
        caught_up=caught_up,
        not_fetched=not_fetched,
        given_up=[d for d in given_up if d not in window],
    )


def day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) runs: 14 lost days read as one range, not a list."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def describe_days(days: Iterable[date]) -> str:
    """'between 2026-10-02 and 2026-10-08', 'on 2026-10-02', or several of them joined."""
    parts = [
        f"on {first.isoformat()}" if first == last else f"between {first.isoformat()} and {last.isoformat()}"
        for first, last in day_ranges(days)
    ]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def lost_days_notices(lost: dict[str, SourceDays], catchup_days: int) -> list[str]:
    """One line per loss (sources with the same days named together), for the digest and the cycle."""
    notices = []
    for kind, why in (
        ("not_fetched", f"digest was not running then, and it goes back at most catchup_days ({catchup_days} days)"),
        ("given_up", f"the source could not be reached for catchup_days ({catchup_days} days)"),
    ):
        by_days: dict[str, list[str]] = {}
        for name, days in lost.items():
            chosen: list[date] = getattr(days, kind)
            if chosen:
                by_days.setdefault(describe_days(chosen), []).append(name)
        for when, names in by_days.items():
            notices.append(f"Papers listed {when} were not fetched from {', '.join(names)} and will not be: {why}.")
    return notices


def lost_ranges(days: SourceDays, catchup_days: int) -> list[tuple[date, date, str]]:
    """The lost days of one source as (first, last, why) runs, as the store keeps them for ``status``."""
    why = {
        "not_fetched": f"digest was not running then; catchup_days is {catchup_days}",
        "given_up": f"unreachable for catchup_days ({catchup_days})",
    }
    return [(first, last, reason) for kind, reason in why.items() for first, last in day_ranges(getattr(days, kind))]


def next_fetched_through(previous: date | None, as_of: date, today: date) -> date:
    """What a source is fetched through after a cycle as of ``as_of``: a re-run of an old date does
    not move it back (the next cycle would fetch again, and call lost, days that were fetched), but
    a day past the real date (a clock that ran ahead) is dropped, or downtime after it would go
    unnoticed until that day came."""
    if previous is None or previous > max(as_of, today):
        return as_of
    return max(previous, as_of)


def prune_anchor(as_of: date, today: date, previous_as_of: date | None) -> date:
    """The latest day a cycle may treat as "now" when it prunes: never past the real date, and never
    past the previous cycle's day either, so one cycle run ahead (``--date``, or a clock that jumped
    forward) cannot move the cut-off for the cycles after it."""
    return min(d for d in (as_of, today, previous_as_of) if d is not None)


def capped_progress(subscribers: Sequence[Subscriber], limit: date) -> list[Subscriber]:
    """Subscribers whose ``caught_up_to`` lies past ``limit`` (the real date), brought back to it.

    Such a date was written by a cycle whose clock ran ahead; left, it would hide days that a later
    catch-up fetches from these subscribers."""
    return [
        replace(s, caught_up_to=limit) for s in subscribers if s.caught_up_to is not None and s.caught_up_to > limit
    ]
