"""Each subscriber's rhythm: when their digest is due, as pure functions of ``now`` and of when a
cycle last handled their digest. No I/O, so the promises can be checked with a fake clock.

A rhythm is daily or weekly (on ``weekday``), at the person's own hour in their IANA zone, or on
the service's schedule (``schedule.cron``) when they chose no hour. Its *slot* is the latest time
at or before ``now`` the digest was due; a person is due when that slot is later than the last
cycle that handled them. Daylight saving follows :mod:`digest.clock` (Vixie cron): an hour skipped
in spring is due at the first instant after the gap, a repeated one once, at its first pass.

Why "later than the last handling" and not "is it the hour now": the service ticks hourly and may
be down for days; a slot missed is still the latest slot at the next tick, so it is caught up
once, never once per missed day. A person with their own hour (or weekly) also never gets two
digests on one local day: a late catch-up counts as that day's.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal

from digest.clock import WEEKDAY_NAMES, WallClockCron, cron_trigger, fire_at_or_after, last_fire, next_fire
from digest.models import Subscriber

WEEKS_SEARCHED = 5  # a weekly slot on the schedule is looked for this many weeks back or ahead


@dataclass(frozen=True, slots=True)
class Rhythm:
    """When one person's digest is due: ``hour`` None means the service's schedule."""

    frequency: str = "daily"
    weekday: int = 0  # 0 = Monday, as date.weekday()
    timezone: str | None = None
    hour: int | None = None

    @classmethod
    def of(cls, subscriber: Subscriber) -> Rhythm:
        """A person's rhythm, with the fields that do not matter for it left at their defaults, so
        that people with the same rhythm share one key (one slot search per tick)."""
        weekly = subscriber.frequency == "weekly"
        own = subscriber.hour is not None
        return cls(
            "weekly" if weekly else "daily",
            subscriber.weekday if weekly else 0,
            subscriber.timezone if own else None,
            subscriber.hour,
        )

    @property
    def on_schedule(self) -> bool:
        """Daily on the service's schedule: today's behaviour, and what ``digest run`` always serves."""
        return self.frequency == "daily" and self.hour is None

    def describe(self) -> str:
        day = f"weekly on {WEEKDAY_NAMES[self.weekday + 1].capitalize()}" if self.frequency == "weekly" else "daily"
        if self.hour is None:
            return f"{day} at schedule.cron"
        return f"{day} at {self.hour:02d}:00 {self.timezone or 'schedule.timezone'}"


@lru_cache(maxsize=4096)
def own_trigger(rhythm: Rhythm, default_zone: str) -> WallClockCron:
    """The cron trigger of a rhythm with its own hour (in the schedule's zone if it names none)."""
    days = WEEKDAY_NAMES[rhythm.weekday + 1] if rhythm.frequency == "weekly" else "*"
    return cron_trigger(f"0 {rhythm.hour} * * {days}", rhythm.timezone or default_zone)


def zone_of(rhythm: Rhythm, schedule: WallClockCron) -> zoneinfo.ZoneInfo:
    """The zone whose calendar days the rhythm counts in."""
    return zoneinfo.ZoneInfo(rhythm.timezone) if rhythm.hour is not None and rhythm.timezone else schedule.zone


def first_fire_on(schedule: WallClockCron, day: date) -> datetime | None:
    """The schedule's first fire time on a local ``day`` of its zone, or None if it has none."""
    start = datetime.combine(day, time(0), schedule.zone).astimezone(UTC)
    fire = fire_at_or_after(schedule, start)
    return fire if fire is not None and fire.astimezone(schedule.zone).date() == day else None


def weekly_on_schedule(rhythm: Rhythm, now: datetime, schedule: WallClockCron, ahead: bool) -> datetime | None:
    """A weekly rhythm without its own hour: the schedule's first fire on the chosen weekday, the
    latest at or before ``now`` (or, ``ahead``, the first after it)."""
    local = now.astimezone(schedule.zone).date()
    step = timedelta(days=7 if ahead else -7)
    if ahead:
        day = local + timedelta(days=(rhythm.weekday - local.weekday()) % 7)
    else:
        day = local - timedelta(days=(local.weekday() - rhythm.weekday) % 7)
    for _ in range(WEEKS_SEARCHED + 1):
        fire = first_fire_on(schedule, day)
        if fire is not None and (fire > now if ahead else fire <= now):
            return fire
        day += step
    return None


def latest_slot(rhythm: Rhythm, now: datetime, schedule: WallClockCron) -> datetime | None:
    """The latest time at or before ``now`` this rhythm's digest was due, or None."""
    if rhythm.hour is not None:
        return last_fire(own_trigger(rhythm, schedule.zone.key), now)
    if rhythm.frequency == "weekly":
        return weekly_on_schedule(rhythm, now, schedule, ahead=False)
    return last_fire(schedule, now)


def next_slot(rhythm: Rhythm, now: datetime, schedule: WallClockCron) -> datetime | None:
    """The first time after ``now`` this rhythm's digest is due, or None."""
    if rhythm.hour is not None:
        return next_fire(own_trigger(rhythm, schedule.zone.key), now + timedelta(microseconds=1))
    if rhythm.frequency == "weekly":
        return weekly_on_schedule(rhythm, now, schedule, ahead=True)
    return next_fire(schedule, now + timedelta(microseconds=1))


def first_due(subscriber: Subscriber, now: datetime, schedule: WallClockCron) -> datetime | None:
    """When ``subscriber``'s next digest is due after ``now`` (a new one's first): the first slot
    after ``now`` still owed to them (one already had that local day is not), or None."""
    rhythm = Rhythm.of(subscriber)
    zone, since = zone_of(rhythm, schedule), since_of(subscriber)
    slot = now
    for _ in range(3):  # the day of a digest already had, then the next: enough for any rhythm
        upcoming = next_slot(rhythm, slot, schedule)
        if upcoming is None or owed(rhythm, upcoming, subscriber.handled_at, since, zone):
            return upcoming
        slot = upcoming
    return None


def owed(
    rhythm: Rhythm,
    slot: datetime | None,
    handled: datetime | None,
    since: datetime | None,
    zone: zoneinfo.ZoneInfo,
) -> bool:
    """Whether the digest due at ``slot`` is still owed, given when a cycle last ``handled`` the
    person and, for a record no cycle has handled since upgrading, ``since`` (their last delivery
    or sign-up: a slot before it is not theirs)."""
    if slot is None:
        return False
    if handled is not None:
        if slot <= handled:
            return False
        one_a_day = rhythm.hour is not None or rhythm.frequency == "weekly"
        return not (one_a_day and handled.astimezone(zone).date() >= slot.astimezone(zone).date())
    return since is None or slot > since


def since_of(subscriber: Subscriber) -> datetime | None:
    """What a record never handled by a rhythm-aware cycle is compared with."""
    known = [t for t in (subscriber.last_delivery_at, subscriber.subscribed_at) if t is not None]
    return max((t if t.tzinfo else t.replace(tzinfo=UTC) for t in known), default=None)


def is_due(subscriber: Subscriber, now: datetime, schedule: WallClockCron) -> bool:
    """Is this subscriber's digest due at ``now``, given what a cycle last handled for them?"""
    rhythm = Rhythm.of(subscriber)
    slot = latest_slot(rhythm, now, schedule)
    return owed(rhythm, slot, subscriber.handled_at, since_of(subscriber), zone_of(rhythm, schedule))


class Slots:
    """Each rhythm's latest slot, kept until its next slot comes (or the clock goes back): a slot
    search costs about a millisecond, and 10,000 people may have thousands of distinct rhythms
    (zones × hours × weekdays), so the hourly tick must not search them all again each hour."""

    def __init__(self, schedule: WallClockCron) -> None:
        self.schedule = schedule
        self._known: dict[Rhythm, tuple[datetime | None, datetime | None, datetime]] = {}

    def latest(self, rhythm: Rhythm, now: datetime) -> datetime | None:
        known = self._known.get(rhythm)
        if known is not None:
            slot, upcoming, asked = known
            if asked <= now and upcoming is not None and now < upcoming:
                return slot
        slot = latest_slot(rhythm, now, self.schedule)
        self._known[rhythm] = (slot, next_slot(rhythm, now, self.schedule), now)
        return slot


class Due:
    """Who is due at ``now``: one slot search per distinct rhythm (or none, with the service's
    :class:`Slots`), then a comparison per person, so a tick with nobody due is a pass over a list.

    ``on_schedule`` says what becomes of people daily on the schedule, who keep today's meaning:
    ``"all"`` serves them whatever their slot says (``digest run``, one cycle now, and the catch-up
    at start after downtime), ``"due"`` as their slot says (the cycle at ``schedule.cron``),
    ``"none"`` leaves them to that cycle (the hourly tick)."""

    def __init__(
        self,
        now: datetime,
        schedule: WallClockCron,
        on_schedule: Literal["all", "due", "none"] = "due",
        slots: Slots | None = None,
    ) -> None:
        self.now = now
        self.schedule = schedule
        self.on_schedule = on_schedule
        self.slots = slots or Slots(schedule)
        self._slots: dict[Rhythm, datetime | None] = {}

    def slot(self, rhythm: Rhythm) -> datetime | None:
        if rhythm not in self._slots:
            self._slots[rhythm] = self.slots.latest(rhythm, self.now)
        return self._slots[rhythm]

    def __call__(self, subscriber: Subscriber) -> bool:
        rhythm = Rhythm.of(subscriber)
        if rhythm.on_schedule and self.on_schedule != "due":
            return self.on_schedule == "all"
        slot = self.slot(rhythm)
        return owed(rhythm, slot, subscriber.handled_at, since_of(subscriber), zone_of(rhythm, self.schedule))

    def wanting_email(self, subscribers: Iterable[Subscriber]) -> int:
        """How many active people who get email are due: the service runs a cycle only if any are."""
        return sum(1 for s in subscribers if s.active and s.by_email and self(s))


@dataclass(frozen=True, slots=True)
class Outlook:
    """One kind of rhythm in ``digest status``: how many, how many due now, and the next time one is due."""

    kind: str
    people: int
    due_now: int
    next_at: datetime | None
    next_count: int


KINDS = ("daily on schedule.cron", "daily at their own hour", "weekly")


def kind_of(rhythm: Rhythm) -> str:
    if rhythm.frequency == "weekly":
        return KINDS[2]
    return KINDS[0] if rhythm.hour is None else KINDS[1]


def served_at(rhythm: Rhythm, slot: datetime) -> datetime:
    """When the service sends for ``slot``: ``schedule.cron``'s own time, or, for a person's own
    hour, the hourly tick at the top of the UTC hour at or after it (07:00 in Asia/Kolkata is
    01:30 UTC, served at 02:00)."""
    if rhythm.hour is None:
        return slot
    utc = slot.astimezone(UTC)
    top = utc.replace(minute=0, second=0, microsecond=0)
    return top if top == utc else top + timedelta(hours=1)


def outlook(subscribers: Iterable[Subscriber], now: datetime, schedule: WallClockCron) -> list[Outlook]:
    """Per kind of rhythm (feed-only people aside): counts, due now, and the next due time."""
    due = Due(now, schedule, on_schedule="none")  # those wait for the next cycle at schedule.cron
    nexts: dict[Rhythm, datetime | None] = {}
    tally: dict[str, list[int]] = {kind: [0, 0] for kind in KINDS}
    upcoming: dict[str, list[datetime]] = {kind: [] for kind in KINDS}
    for person in subscribers:
        if not person.active or not person.by_email:
            continue
        rhythm = Rhythm.of(person)
        kind = kind_of(rhythm)
        tally[kind][0] += 1
        if due(person):
            tally[kind][1] += 1
            continue
        if rhythm not in nexts:
            slot = next_slot(rhythm, now, schedule)
            nexts[rhythm] = served_at(rhythm, slot) if slot is not None else None
        when = nexts[rhythm]
        if when is not None:
            upcoming[kind].append(when.astimezone(UTC))
    found = []
    for kind in KINDS:
        people, due_now = tally[kind]
        first = min(upcoming[kind], default=None)
        found.append(Outlook(kind, people, due_now, first, upcoming[kind].count(first) if first else 0))
    return [o for o in found if o.people]
