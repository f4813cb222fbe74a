"""When cycles are due: the cron trigger, the last time it fired, and whether a start must catch up.

Pure except for APScheduler's trigger arithmetic. ``schedule.cron`` is crontab syntax (five
fields: minute hour day month weekday); a sixth field in front, for seconds, is also accepted
(``*/10 * * * * *``), as several cron dialects do: it makes "a few seconds from now" expressible,
which the tests of ``digest serve`` rely on.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

# Widening look-backs for the last fire time: dense schedules are found in the first, a monthly
# one in the last; each costs only as many trigger steps as fires in its span.
_LOOKBACKS = (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32), timedelta(days=367))


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """A trigger from five crontab fields, or six with seconds first; ValueError says what is wrong."""
    fields = expression.split()
    zone = zoneinfo.ZoneInfo(timezone)
    if len(fields) == 5:
        return CronTrigger.from_crontab(expression, timezone=zone)
    if len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, timezone=zone
        )
    raise ValueError(f"expected 5 fields (or 6 with seconds first), got {len(fields)}")


def next_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def last_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest scheduled time at or before ``now`` (within a year), or None."""
    for span in _LOOKBACKS:
        fire = trigger.get_next_fire_time(None, now - span)
        if fire is None or fire > now:
            continue
        while True:
            following = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
            if following is None or following > now:
                return fire  # type: ignore[no-any-return]
            fire = following
    return None


def started(cycle: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(cycle["started_at"])


def last_good(cycles: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The latest cycle that ran for real and kept every promise (sent all, fetched all)."""
    good = [c for c in cycles if c.get("ok") and not c.get("dry_run")]
    return max(good, key=started, default=None)


def needs_catch_up(cycles: Iterable[Mapping[str, Any]], last_scheduled: datetime | None) -> bool:
    """True when the service was down (or failing) at the last scheduled time.

    A store with no cycle at all has missed nothing: the service has never run before, and its
    first cycle is the next scheduled one.
    """
    recorded = [c for c in cycles if not c.get("dry_run")]
    if last_scheduled is None or not recorded:
        return False
    good = last_good(recorded)
    return good is None or started(good) < last_scheduled
