"""Wall-clock time for the schedule: the time now, today in a zone, and when a cron schedule fires, across DST.

Pure except for APScheduler's field matching. ``schedule.cron`` is crontab syntax (five fields:
minute hour day month weekday); a sixth field in front, for seconds, is also accepted
(``*/10 * * * * *``), as several cron dialects do: it makes "a few seconds from now" expressible,
which the tests of ``digest serve`` rely on.

Daylight saving follows Vixie cron for times of day: a wall-clock time that happens twice (the
autumn night) fires once, at its first occurrence; one that does not happen (the spring gap)
fires once, at the first instant after the gap (02:30 runs at 03:00). Every fire time is computed
in UTC and is strictly later than the one before, so no loop here can stall on a clock change.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

# Widening look-backs for the last fire time: a dense schedule is found in the first, a yearly
# one in the last; a schedule that did not fire within a year has no last fire.
_LOOKBACKS = tuple(timedelta(minutes=m) for m in (1, 60, 24 * 60, 8 * 24 * 60, 32 * 24 * 60, 367 * 24 * 60))
_TICK = timedelta(microseconds=1)
# The search starts at the exact wall-clock time, so one step finds the fire; the bound only
# guarantees that the loop ends.
_MAX_STEPS = 64


class WallClockCron(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger: cron fields matched on the local wall clock, fire times stepped in UTC.

    APScheduler 3's own CronTrigger fires a daily 02:30 job twice on the autumn night (once per
    pass through the repeated hour) and at 03:30 in spring. This one keeps the rules in the module
    docstring; the fields are matched by a CronTrigger on UTC, a clock with no daylight saving.
    """

    __slots__ = ("expression", "wall", "zone")

    def __init__(self, expression: str, wall: CronTrigger, zone: zoneinfo.ZoneInfo) -> None:
        self.expression = expression
        self.wall = wall
        self.zone = zone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None:
            return fire_at_or_after(self, now)
        # In UTC: adding to a local time would drop fold=1 and step back an hour in the autumn.
        return fire_at_or_after(self, previous_fire_time.astimezone(UTC) + _TICK)

    def __str__(self) -> str:
        return f"cron[{self.expression}] in {self.zone.key}"


def cron_trigger(expression: str, timezone: str) -> WallClockCron:
    """A trigger from five crontab fields, or six with seconds first; ValueError says what is wrong."""
    fields = expression.split()
    zone = zoneinfo.ZoneInfo(timezone)
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected 5 fields (or 6 with seconds first), got {len(fields)}")
    second, minute, hour, day, month, day_of_week = fields
    wall = CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(day_of_week),
        timezone="UTC",
    )
    return WallClockCron(expression, wall, zone)


WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMERIC_WEEKDAYS = re.compile(r"\*|\d+(?:-\d+)?")


def crontab_weekdays(field: str) -> str:
    """The day-of-week field with crontab's numbers as names: crontab counts from Sunday (0 or 7),
    APScheduler from Monday, so ``1-5`` passed through would run Tuesday to Saturday.

    Names (``mon-fri``) and ``*`` alone pass through unchanged."""
    parts = []
    for part in field.split(","):
        body, _, step = part.partition("/")
        if not _NUMERIC_WEEKDAYS.fullmatch(body) or (body == "*" and not step):
            parts.append(part)
            continue
        first_text, _, last_text = body.partition("-")
        first = 0 if body == "*" else int(first_text)
        last = 6 if body == "*" or (step and not last_text) else int(last_text or first_text)
        if not 0 <= first <= last <= 7:
            raise ValueError(f"day of week {body!r}: crontab's days are 0-7 (0 and 7 are Sunday), low to high")
        days = range(first, last + 1, int(step) if step else 1)
        parts.append(",".join(dict.fromkeys(WEEKDAY_NAMES[d] for d in days)))
    return ",".join(parts)


def _offset(zone: zoneinfo.ZoneInfo, instant: datetime) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _change_at(zone: zoneinfo.ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The offset change between two instants with different offsets, to the second, by bisection.

    zoneinfo has no public list of transitions; they fall on whole seconds, and a bisection over
    at most a few hours takes about a dozen steps.
    """
    target = _offset(zone, after)
    low, high = int(before.timestamp() // 1), -int(-after.timestamp() // 1)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, datetime.fromtimestamp(middle, UTC)) == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _instant(zone: zoneinfo.ZoneInfo, wall: datetime) -> datetime:
    """When a naive wall-clock time fires: its first occurrence, or the end of the gap it falls in."""
    first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first of a repeated time
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 reads the wall on the offset before the change, fold=1 on the one after.
    return _change_at(zone, wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first)


def _search_from(zone: zoneinfo.ZoneInfo, start: datetime) -> datetime:
    """The earliest naive wall-clock time whose fire instant is at or after ``start`` (UTC)."""
    local = start.astimezone(zone)
    wall = local.replace(tzinfo=None)
    offset = local.utcoffset() or timedelta(0)
    if local.fold:
        # The second pass through a repeated hour: its times fired on the first pass. Search
        # from where the wall clock passes the end of that hour.
        first_pass = local.replace(fold=0).utcoffset() or timedelta(0)
        change = _change_at(zone, start - (first_pass - offset), start)
        return (change + first_pass).replace(tzinfo=None)
    before = _offset(zone, start - _TICK) or timedelta(0)
    if before < offset:
        return wall - (offset - before)  # ``start`` ends a gap: the gap's times fire now
    return wall


def fire_at_or_after(trigger: WallClockCron, start: datetime) -> datetime | None:
    """The first fire time at or after ``start``, in the trigger's zone, or None if there is none."""
    start = start.astimezone(UTC)
    wall = _search_from(trigger.zone, start)
    for _ in range(_MAX_STEPS):
        match: datetime | None = trigger.wall.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        if match is None:
            return None
        fire = _instant(trigger.zone, match.replace(tzinfo=None))
        if fire >= start:
            return fire.astimezone(trigger.zone)
        wall = match.replace(tzinfo=None) + timedelta(seconds=1)
    raise RuntimeError(f"no fire time found for {trigger} after {start.isoformat()}")


def next_fire(trigger: WallClockCron, now: datetime) -> datetime | None:
    return fire_at_or_after(trigger, now)


def last_fire(trigger: WallClockCron, now: datetime) -> datetime | None:
    """The latest fire time at or before ``now`` (within a year), or None.

    Widening look-backs find the span holding the last fire in a few searches; when that span
    holds more than one, a bisection over whole seconds (fire times are whole seconds) finds the
    last in about log2(span) searches, instead of stepping through every fire of a dense schedule.
    """
    now = now.astimezone(UTC)
    for span in _LOOKBACKS:
        fire = fire_at_or_after(trigger, now - span)
        if fire is None or fire > now:
            continue
        following = fire_at_or_after(trigger, fire + _TICK)
        if following is None or following > now:
            return fire
        low, high = int(following.timestamp()), int(now.timestamp()) + 1
        # The first fire at or after ``low`` is at or before ``now``; the first at or after ``high`` is later.
        while high - low > 1:
            middle = (low + high) // 2
            fire = fire_at_or_after(trigger, datetime.fromtimestamp(middle, UTC))
            if fire is not None and fire <= now:
                low = middle
            else:
                high = middle
        return fire_at_or_after(trigger, datetime.fromtimestamp(low, UTC))
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


def today_in(timezone: str) -> date:
    """Today's date on the wall clock of ``timezone`` (an IANA name)."""
    return datetime.now(zoneinfo.ZoneInfo(timezone)).date()
