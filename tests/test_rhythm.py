"""Each subscriber's rhythm as pure functions (digest.cycle.rhythm): when a digest is due, across
DST nights, after downtime, for new and upgraded records; who a cycle plans; what status says."""

from __future__ import annotations

import itertools
import time
import zoneinfo
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import digest.cycle.rhythm as rhythm_module
from digest.clock import cron_trigger
from digest.cycle.config import CycleConfig
from digest.cycle.plan import plan_digests, plan_from_store
from digest.cycle.rhythm import Due, Rhythm, Slots, is_due, latest_slot, next_slot, outlook
from digest.cycle.steps import kept_days
from digest.models import Item, Subscriber
from digest.ops.status import Status, rhythm_lines
from tests.conftest import pass_store

SCHEDULE = cron_trigger("0 7 * * *", "UTC")
T0 = datetime(2026, 3, 27, 0, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def own(hour: int, zone: str, frequency: str = "daily", weekday: int = 0, **more: datetime) -> Subscriber:
    since = T0 - timedelta(days=30)
    person = Subscriber("a@example.org", ("gpu",), subscribed_at=since, timezone=zone, hour=hour)
    return replace(person, frequency=frequency, weekday=weekday, **more)


def ticks(person: Subscriber, start: datetime, hours: int, skip: range = range(0)) -> list[datetime]:
    """Hourly ticks from ``start`` (UTC): each one that finds the person due serves them."""
    served = []
    for k in range(hours):
        if k in skip:
            continue
        now = start + timedelta(hours=k)
        if is_due(person, now, SCHEDULE):
            served.append(now)
            person = replace(person, handled_at=now)
    return served


def with_last_slot_handled(person: Subscriber, now: datetime) -> Subscriber:
    """As a running service leaves a person: their latest slot before ``now`` handled when it came."""
    return replace(person, handled_at=latest_slot(Rhythm.of(person), now, SCHEDULE))


# -- the due function ------------------------------------------------------------------------------


def test_due_once_the_local_hour_has_come_and_not_again_that_day() -> None:
    person = own(7, "Europe/Berlin")
    handled = replace(person, handled_at=at("2026-12-06T07:00:00+01:00"))
    assert not is_due(handled, at("2026-12-07T06:59:00+01:00"), SCHEDULE)
    assert is_due(handled, at("2026-12-07T07:00:00+01:00"), SCHEDULE)
    assert is_due(handled, at("2026-12-07T19:00:00+01:00"), SCHEDULE)  # missed: still due later that day
    done = replace(handled, handled_at=at("2026-12-07T07:00:00+01:00"))
    assert not is_due(done, at("2026-12-07T23:59:00+01:00"), SCHEDULE)


def test_a_late_catch_up_counts_as_that_days_digest() -> None:
    """Down over yesterday's 07:00, back at 05:00: served now, and not again at 07:00 the same day."""
    person = own(7, "Europe/Berlin", handled_at=at("2026-12-05T07:00:00+01:00"))
    assert is_due(person, at("2026-12-07T05:00:00+01:00"), SCHEDULE)
    caught_up = replace(person, handled_at=at("2026-12-07T05:00:00+01:00"))
    assert not is_due(caught_up, at("2026-12-07T07:00:00+01:00"), SCHEDULE)
    assert is_due(caught_up, at("2026-12-08T07:00:00+01:00"), SCHEDULE)


@pytest.mark.parametrize(
    ("zone", "hour", "first", "expected"),
    [
        ("Europe/Berlin", 2, "2026-03-29T00:00:00+00:00", "2026-03-29T03:00:00+02:00"),  # skipped: next hour
        ("Europe/Berlin", 2, "2026-10-24T22:00:00+00:00", "2026-10-25T02:00:00+02:00"),  # repeated: first pass
        ("America/New_York", 2, "2026-03-08T05:00:00+00:00", "2026-03-08T03:00:00-04:00"),
        ("America/New_York", 1, "2026-11-01T04:00:00+00:00", "2026-11-01T01:00:00-04:00"),
    ],
)
def test_dst_nights_serve_once_at_the_next_existing_hour(zone: str, hour: int, first: str, expected: str) -> None:
    person = own(hour, zone, handled_at=at(first) - timedelta(hours=20))
    served = ticks(person, at(first), 6)
    assert [s.astimezone(zoneinfo.ZoneInfo(zone)).isoformat() for s in served] == [expected]


@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    start=st.integers(0, 24 * 365),
    weekly=st.booleans(),
    weekday=st.integers(0, 6),
)
@hypothesis_settings(max_examples=25, deadline=None)
def test_hourly_ticks_serve_exactly_once_per_local_day_or_week(
    zone: str, hour: int, start: int, weekly: bool, weekday: int
) -> None:
    """Any zone (half-hour offsets, a 30-minute DST shift), any hour, any time of year."""
    begin = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=start)
    person = with_last_slot_handled(own(hour, zone, "weekly" if weekly else "daily", weekday), begin)
    tz = zoneinfo.ZoneInfo(zone)
    served = [s.astimezone(tz) for s in ticks(person, begin, 24 * 16)]
    days = Counter(s.date() for s in served)
    assert all(n == 1 for n in days.values()), served
    if weekly:
        assert 2 <= len(served) <= 3 and all(s.weekday() == weekday for s in served), served
        assert all(b - a >= timedelta(days=6, hours=22) for a, b in itertools.pairwise(served))
    else:
        first, last = (
            begin.astimezone(tz).date() + timedelta(days=1),
            (begin + timedelta(days=15)).astimezone(tz).date(),
        )
        assert all(days[first + timedelta(days=k)] == 1 for k in range((last - first).days)), served


@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    down_from=st.integers(0, 24 * 5),
    down_for=st.integers(1, 24 * 12),
    weekly=st.booleans(),
)
@hypothesis_settings(max_examples=25, deadline=None)
def test_downtime_is_caught_up_once_never_doubled(
    zone: str, hour: int, down_from: int, down_for: int, weekly: bool
) -> None:
    begin = datetime(2026, 10, 20, tzinfo=UTC)
    person = with_last_slot_handled(own(hour, zone, "weekly" if weekly else "daily", 2), begin)
    down = range(down_from, down_from + down_for)
    served = ticks(person, begin, 24 * 18, skip=down)
    back = begin + timedelta(hours=down.stop)
    missed = latest_slot(Rhythm.of(person), back, SCHEDULE)
    tz = zoneinfo.ZoneInfo(zone)
    last = max([s for s in served if s < back], default=person.handled_at)
    assert missed is not None and last is not None
    owed = missed > last and last.astimezone(tz).date() < missed.astimezone(tz).date()
    assert (back in served) == owed  # the first tick back serves a missed slot, and only then
    assert all(n == 1 for n in Counter(s.astimezone(tz).date() for s in served).values())


def test_the_schedule_is_the_default_and_each_fire_is_a_digest() -> None:
    """No hour: today's behaviour, each fire of ``schedule.cron`` (a weekly one: its first fire that day)."""
    person = Subscriber("a@example.org", ("gpu",), subscribed_at=at("2026-12-01T00:00:00+00:00"))
    assert is_due(person, at("2026-12-06T07:00:00+00:00"), SCHEDULE)
    handled = replace(person, handled_at=at("2026-12-06T07:00:05+00:00"))
    assert not is_due(handled, at("2026-12-06T23:00:00+00:00"), SCHEDULE)
    assert is_due(handled, at("2026-12-07T07:00:00+00:00"), SCHEDULE)
    dense = cron_trigger("*/10 * * * * *", "UTC")  # the tests' schedule: every fire is a cycle, as before
    assert is_due(handled, at("2026-12-06T07:00:10+00:00"), dense)
    weekly = replace(person, frequency="weekly", weekday=0)  # Monday, 07:00 UTC
    assert latest_slot(Rhythm.of(weekly), at("2026-12-06T12:00:00+00:00"), SCHEDULE) == at("2026-11-30T07:00:00+00:00")
    assert next_slot(Rhythm.of(weekly), at("2026-12-06T12:00:00+00:00"), SCHEDULE) == at("2026-12-07T07:00:00+00:00")


def test_new_and_upgraded_records_wait_for_the_next_slot_after_they_joined_or_were_served() -> None:
    joined = Subscriber("a@example.org", ("gpu",), subscribed_at=at("2026-12-06T15:00:00+00:00"))
    assert not is_due(joined, at("2026-12-06T16:00:00+00:00"), SCHEDULE)  # the next 07:00, as the confirm page says
    assert is_due(joined, at("2026-12-07T07:00:00+00:00"), SCHEDULE)
    early = replace(own(7, "Europe/Berlin"), subscribed_at=at("2026-12-07T05:00:00+01:00"))
    assert is_due(early, at("2026-12-07T07:00:00+01:00"), SCHEDULE)  # joined before their hour: today
    upgraded = Subscriber("b@example.org", ("gpu",), last_delivery_at=at("2026-12-06T07:00:03+00:00"))
    assert not is_due(upgraded, at("2026-12-06T10:00:00+00:00"), SCHEDULE)  # had today's from the old version
    assert is_due(Subscriber("c@example.org", ("gpu",)), at("2026-12-06T10:00:00+00:00"), SCHEDULE)


def test_digest_run_serves_everyone_on_the_schedule_and_others_only_when_due() -> None:
    now = at("2026-12-06T10:00:00+00:00")
    fresh = Subscriber("a@example.org", ("gpu",), subscribed_at=now - timedelta(minutes=1))
    berlin = replace(own(18, "Europe/Berlin"), handled_at=now - timedelta(hours=20))
    weekly = replace(fresh, email="w@example.org", frequency="weekly", weekday=3, handled_at=now - timedelta(days=1))
    run = Due(now, SCHEDULE, on_schedule="all")
    assert run(fresh) and not run(berlin) and not run(weekly)
    assert not Due(now, SCHEDULE)(fresh)
    missed = replace(fresh, subscribed_at=now - timedelta(days=2), handled_at=now - timedelta(days=2))
    assert Due(now, SCHEDULE)(missed)  # the cycle at schedule.cron serves them as their slot says
    assert not Due(now, SCHEDULE, on_schedule="none")(missed)  # the hourly tick leaves them to it


def test_a_tick_searches_once_per_rhythm_not_once_per_person(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 10,000 subscribers a tick with nobody due is a pass over a list (one slot search per rhythm)."""
    calls = Counter[Rhythm]()
    real = rhythm_module.latest_slot

    def counted(rhythm: Rhythm, now: datetime, schedule: object) -> datetime | None:
        calls[rhythm] += 1
        return real(rhythm, now, schedule)  # type: ignore[arg-type]

    monkeypatch.setattr(rhythm_module, "latest_slot", counted)
    now = at("2026-12-06T10:00:00+00:00")
    zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", None]
    people = [
        Subscriber(
            f"p{k}@example.org",
            ("gpu",),
            subscribed_at=now - timedelta(days=9),
            timezone=zones[k % 4],
            hour=None if zones[k % 4] is None else k % 24,
            frequency="weekly" if k % 7 == 0 else "daily",
            weekday=k % 7,
            handled_at=now,
        )
        for k in range(10_000)
    ]
    started = time.perf_counter()
    assert Due(now, SCHEDULE).wanting_email(people) == 0
    elapsed = time.perf_counter() - started
    assert max(calls.values()) == 1 and len(calls) <= 4 * 24 * 8
    assert elapsed < 30  # no hang; about 0.05 s here


# -- planning, pruning and status ------------------------------------------------------------------


def item(day: date) -> Item:
    return Item(f"p{day:%Y%m%d}", "hf_papers", "GPU kernels", "Fast GPU kernels.", "https://x.test", day)


def test_only_those_due_are_planned_and_feed_only_people_get_no_email(tmp_path: Path) -> None:
    now = at("2026-12-06T10:00:00+00:00")
    due = Subscriber("due@example.org", ("gpu",), subscribed_at=now - timedelta(days=3))
    later = replace(own(18, "Europe/Berlin"), email="later@example.org", handled_at=now - timedelta(hours=20))
    feed = replace(due, email="feed@example.org", by_email=False)
    with pass_store(tmp_path) as store:
        store.save_subscribers([due, later, feed])
        store.upsert_items([item(date(2026, 12, 5)), item(date(2026, 12, 6))], now)
        plan = plan_from_store(store, date(2026, 12, 5), date(2026, 12, 6), Due(now, SCHEDULE))
        assert [d.subscriber.email for d in plan.digests] == ["due@example.org"]
        assert [s.email for s in plan.nothing_for] == ["feed@example.org"]  # moved on, no email
        nobody = plan_from_store(store, date(2026, 12, 5), date(2026, 12, 6), lambda s: False)
        assert nobody.digests == [] and nobody.nothing_for == []
    everyone = plan_digests(
        [due, feed], [item(date(2026, 12, 6))], lambda e, d: set(), date(2026, 12, 5), date.min, date(2026, 12, 6)
    )
    assert [d.subscriber.email for d in everyone.digests] == ["due@example.org"]


def test_a_weekly_persons_papers_outlive_a_short_retention() -> None:
    config = CycleConfig.__new__(CycleConfig)
    object.__setattr__(config, "retention_days", 7)
    object.__setattr__(config, "lookback_days", 3)
    daily = Subscriber("a@example.org", ("gpu",))
    assert kept_days(config, [daily]) == 7
    assert kept_days(config, [daily, replace(daily, frequency="weekly")]) == 10


def test_status_says_per_rhythm_how_many_and_when_next() -> None:
    now = at("2026-12-06T10:00:00+00:00")
    base = Subscriber(
        "a@example.org", ("gpu",), subscribed_at=now - timedelta(days=3), handled_at=now - timedelta(hours=3)
    )
    people = [
        base,
        replace(base, email="b@example.org"),
        replace(own(18, "Europe/Berlin"), email="c@example.org", handled_at=now - timedelta(hours=20)),
        replace(own(6, "Europe/Berlin"), email="d@example.org", handled_at=now - timedelta(days=2)),  # missed: due
        replace(base, email="e@example.org", frequency="weekly", weekday=0),
        replace(base, email="f@example.org", by_email=False),
        # 07:00 in Kolkata is 01:30 UTC: the tick at 02:00 serves it, and status says so
        replace(own(7, "Asia/Kolkata"), email="g@example.org", handled_at=now - timedelta(hours=4)),
    ]
    state = Status(cycles=[], sources=[], rhythms=outlook(people, now, SCHEDULE), feed_only=1)
    assert rhythm_lines(state, "UTC") == [
        "rhythm daily on schedule.cron: 2 subscriber(s), next due 2026-12-07 07:00 UTC (2)",
        "rhythm daily at their own hour: 3 subscriber(s), 1 due now (next hourly tick), "
        "next due 2026-12-06 17:00 UTC (1)",
        "rhythm weekly: 1 subscriber(s), next due 2026-12-07 07:00 UTC (1)",
        "rhythm feed only: 1 subscriber(s), no email",
    ]
    kolkata = [replace(people[-1], handled_at=now)]
    (only,) = outlook(kolkata, now, SCHEDULE)
    assert only.next_at == at("2026-12-07T02:00:00+00:00")


@given(
    rhythm=st.builds(
        Rhythm,
        frequency=st.sampled_from(["daily", "weekly"]),
        weekday=st.integers(0, 6),
        timezone=st.sampled_from(ZONES),
        hour=st.one_of(st.none(), st.integers(0, 23)),
    ),
    steps=st.lists(st.integers(min_value=-6 * 3600, max_value=30 * 3600), min_size=1, max_size=20),
)
@hypothesis_settings(max_examples=40, deadline=None)
def test_the_services_slot_cache_answers_as_the_search_does(rhythm: Rhythm, steps: list[int]) -> None:
    """The hourly tick keeps each rhythm's slot until its next one (:class:`Slots`): with a clock
    that jumps back and forth across the autumn night, it must answer exactly what the search does."""
    slots = Slots(SCHEDULE)
    now = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    for step in steps:
        now += timedelta(seconds=step)
        assert slots.latest(rhythm, now) == latest_slot(rhythm, now, SCHEDULE), now
