"""The hourly service with a fake clock: each person's digest at their own hour, across the DST
nights of 2026 in Europe/Berlin and America/New_York, weekly digests with a week's papers, and a
service down for nine days catching up once per person.

Real pieces but the clock and the source: the store, the cycle, and an aiosmtpd server the
digests are sent to. The scheduler's two jobs are called as APScheduler would call them: the
``schedule.cron`` cycle at its fire times, the tick every hour (in UTC), both at the fake ``now``.
On the PostgreSQL pass they run as ``digest serve`` runs them there (:mod:`digest.ops.roles`): the
cycles queue the digests, and a worker sends the queue after each job.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.clock import cron_trigger, last_fire
from digest.cycle.run import cycle_config, run_once
from digest.mail.mailer import make_mailer
from digest.models import CycleReport, Item, Subscriber
from digest.ops.service import CycleJob
from digest.paths import OUTBOX_DIR
from digest.settings import Settings
from digest.sources import FetchResult
from digest.state.backend import is_postgres, open_backend
from tests.servers import SmtpSink

PAPER = re.compile(r"\bp20\d{6}\b")
CRON = "0 7 * * *"  # the service's schedule, in UTC: the default delivery time


class DailyPapers:
    """One paper a day, about GPUs, whose id names its day (``p20260329``)."""

    name = "hf_papers"

    def fetch(self, client: httpx.Client, days: list[date]) -> FetchResult:
        return FetchResult(items=[paper(day) for day in days])


def paper(day: date) -> Item:
    pid = f"p{day:%Y%m%d}"
    return Item(pid, "hf_papers", f"GPU kernels {pid}", "Fast GPU kernels.", f"https://x.test/{pid}", day)


@dataclass
class Sent:
    at: datetime  # the fake tick
    to: str
    papers: list[str]


def queueing_cycle(settings: Settings, **options: Any) -> CycleReport | None:
    """The cycle of ``digest serve``'s scheduler on PostgreSQL (:func:`digest.ops.roles.queueing_cycle`)
    less its turn among several schedulers, whose "a cycle ran since the fire time" reads the real clock."""
    return run_once(settings, enqueue=True, **options)


class QueueWorker:
    """``digest serve``'s worker on PostgreSQL (:func:`digest.ops.roles.worker_thread`) on the fake clock:
    :meth:`drain` sends what the scheduler's job queued, as the running worker would right after it
    (rows a 4xx refusal postponed, for tenths of a second here, included)."""

    def __init__(self, settings: Settings, now: Callable[[], datetime]) -> None:
        from digest.cycle.queue import Worker

        self.stack = contextlib.ExitStack()
        mailer = self.stack.enter_context(make_mailer(settings.smtp, settings.data_dir / OUTBOX_DIR))
        self.worker = Worker(cycle_config(settings), settings.store.url, mailer, now, threading.Event())
        self.stack.callback(self.worker.close)

    def drain(self) -> None:
        from digest.state.postgres.queue import queued_count

        deadline = time.monotonic() + 60
        self.worker.run(until_empty=True)
        while queued_count(self.worker.pace):
            assert time.monotonic() < deadline, "the queue was not sent within a minute"
            time.sleep(0.05)
            self.worker.run(until_empty=True)


@dataclass
class World:
    """A data directory, the SMTP sink, and the service's jobs on a fake clock."""

    settings: Settings
    smtp: SmtpSink
    now: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    sent: list[Sent] = field(default_factory=list)

    def hours(self, start: datetime, end: datetime, catch_up: bool = False) -> None:
        """Every hour from ``start`` to ``end`` (UTC, on the hour): the cron job at its fire times, then
        the tick. ``catch_up``: the service starts as ``serve`` does after a missed ``schedule.cron``,
        with the cron job at once (``must_catch_up`` reads the real clock, so the test says so)."""
        with contextlib.ExitStack() as stack:
            queued = is_postgres(self.settings.store.url)  # ``digest serve`` queues there (digest.ops.roles)
            worker = QueueWorker(self.settings, lambda: self.now) if queued else None
            if worker is not None:
                stack.callback(worker.stack.close)
            cycle = queueing_cycle if queued else run_once
            job = CycleJob(
                self.settings, threading.Event(), catch_up, now=lambda: self.now, sources=[DailyPapers()], cycle=cycle
            )
            self.run_hours(job, worker, start, end, catch_up)

    def run_hours(
        self, job: CycleJob, worker: QueueWorker | None, start: datetime, end: datetime, catch_up: bool
    ) -> None:
        schedule = cron_trigger(CRON, "UTC")
        self.now = start
        while self.now <= end:
            before = len(self.smtp.messages)
            if last_fire(schedule, self.now) == self.now or (catch_up and self.now == start):
                job()
                if worker is not None:
                    worker.drain()
            job.tick()
            if worker is not None:
                worker.drain()
            for message in self.smtp.messages[before:]:
                text = message.get_body(preferencelist=("plain",)).get_content()
                self.sent.append(Sent(self.now, str(message["To"]), sorted(set(PAPER.findall(text)))))
            self.now += timedelta(hours=1)

    def to(self, who: str) -> list[Sent]:
        return [s for s in self.sent if who in s.to]


@pytest.fixture
def world(tmp_path: Path, smtp: SmtpSink) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path / "data",
        public_url="https://digest.example.org",
        schedule={"cron": CRON, "timezone": "UTC"},
        smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "papers@example.org"},
        retry={"initial_delay_seconds": 0.05, "max_delay_seconds": 0.2, "send_budget_seconds": 1},
    )
    yield World(settings, smtp)


def subscribe(world: World, *people: Subscriber) -> None:
    with open_backend(world.settings.store.url, world.settings.data_dir) as store:
        store.save_subscribers(people)


def person(email: str, at: datetime, **rhythm: Any) -> Subscriber:
    return Subscriber(email, ("gpu",), subscribed_at=at, **rhythm)


def local(when: datetime, zone: str) -> datetime:
    return when.astimezone(zoneinfo.ZoneInfo(zone))


def every_day(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def assert_each_paper_once_and_none_lost(world: World, who: str) -> None:
    """Every paper listed from their first digest's window (look-back 2) up to the day of their last
    digest reached them, once."""
    got = [pid for s in world.to(who) for pid in s.papers]
    assert len(got) == len(set(got)), f"{who} got a paper twice: {Counter(got).most_common(3)}"
    first_day = min(s.at for s in world.to(who)).date() - timedelta(days=1)
    last_as_of = max(s.at for s in world.to(who)).date()
    assert set(got) == {paper(d).id for d in every_day(first_day, last_as_of)}, who


NIGHTS = [
    ("Europe/Berlin", date(2026, 3, 29), 2, "2026-03-29T03:00:00+02:00"),  # 02:00 skipped: sent at 03:00
    ("Europe/Berlin", date(2026, 10, 25), 2, "2026-10-25T02:00:00+02:00"),  # 02:00 twice: sent the first time
    ("America/New_York", date(2026, 3, 8), 2, "2026-03-08T03:00:00-04:00"),
    ("America/New_York", date(2026, 11, 1), 1, "2026-11-01T01:00:00-04:00"),
]


@pytest.mark.parametrize(("zone", "night", "hour", "sent_that_night"), NIGHTS)
def test_each_person_gets_one_digest_per_local_day_at_their_hour_across_dst(
    world: World, zone: str, night: date, hour: int, sent_that_night: str
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    start = datetime(night.year, night.month, night.day, 12, tzinfo=tz).astimezone(UTC) - timedelta(days=2)
    start = start.replace(minute=0)
    end = start + timedelta(days=10)  # through the next Sunday (every night here is a Sunday)
    subscribe(
        world,
        person("night@example.org", start, timezone=zone, hour=hour),
        person("morning@example.org", start, timezone=zone, hour=7),
        person("weekly@example.org", start, timezone=zone, hour=hour, frequency="weekly", weekday=6),
        person("default@example.org", start),  # no hour: schedule.cron, 07:00 UTC
        person("feed@example.org", start, by_email=False),
    )

    world.hours(start, end)

    days = every_day(local(start, zone).date() + timedelta(days=1), local(end, zone).date() - timedelta(days=1))
    for who, at in (("night", hour), ("morning", 7)):
        sends = world.to(f"{who}@example.org")
        per_day = Counter(local(s.at, zone).date() for s in sends)
        assert all(per_day[d] == 1 for d in days), (who, per_day)
        assert all(count == 1 for count in per_day.values()), (who, per_day)
        assert all(local(s.at, zone).hour in (at, at + 1) for s in sends), [s.at for s in sends]  # +1: the gap
    night_sends = [local(s.at, zone) for s in world.to("night@example.org") if local(s.at, zone).date() == night]
    assert [s.isoformat() for s in night_sends] == [sent_that_night]
    defaults = world.to("default@example.org")
    assert [s.at.hour for s in defaults] == [7] * len(defaults)
    assert len(defaults) == len({s.at.date() for s in defaults})
    assert world.to("feed@example.org") == []

    weekly = world.to("weekly@example.org")
    assert local(weekly[0].at, zone).isoformat() == sent_that_night
    assert len(weekly) == 2 and (weekly[1].at - weekly[0].at) >= timedelta(days=6, hours=22)
    a_week = {paper(night + timedelta(days=k)).id for k in range(1, 8)}
    assert a_week <= set(weekly[1].papers), "the second weekly digest holds the week's papers"

    for who in ("night", "morning", "weekly", "default"):
        assert_each_paper_once_and_none_lost(world, f"{who}@example.org")
    with open_backend(world.settings.store.url, world.settings.data_dir, write=False) as store:
        cycles = store.cycles(last=500)
    assert cycles and all(c["failed"] == 0 and c["ok"] for c in cycles)  # the feed-only person is no failure


def test_a_service_down_for_nine_days_catches_up_once_per_person(world: World) -> None:
    start = datetime(2026, 10, 5, 0, tzinfo=UTC)  # a Monday
    subscribe(
        world,
        person("berlin@example.org", start, timezone="Europe/Berlin", hour=8),
        person("york@example.org", start, timezone="America/New_York", hour=6),
        person("weekly@example.org", start, timezone="Europe/Berlin", hour=9, frequency="weekly", weekday=1),
        person("default@example.org", start),
    )
    world.hours(start, start + timedelta(days=2))  # Monday to Wednesday: all had theirs
    before = {who: len(world.to(who)) for who in ("berlin", "york", "weekly", "default")}
    assert before == {"berlin": 2, "york": 2, "weekly": 1, "default": 2}

    back = start + timedelta(days=11, hours=12)  # down from Wednesday to the Friday of the next week
    world.hours(back, back, catch_up=True)  # the start-up: the cron cycle at 07:00 was missed
    caught_up = {s.to for s in world.sent if s.at == back}
    assert caught_up == {f"{w}@example.org" for w in ("berlin", "york", "weekly", "default")}
    assert len([s for s in world.sent if s.at == back]) == 4  # one each, never one per missed day

    world.hours(back + timedelta(hours=1), back + timedelta(days=5))
    for who in ("berlin", "york", "weekly", "default"):
        sends = world.to(f"{who}@example.org")
        assert_each_paper_once_and_none_lost(world, f"{who}@example.org")
        later = [s for s in sends if s.at > back]
        assert all(s.at - back >= timedelta(hours=8) for s in later), (who, [s.at for s in later])
    weekly = world.to("weekly@example.org")
    assert [s.at.date() for s in weekly] == [date(2026, 10, 6), back.date(), date(2026, 10, 20)]
    assert len(weekly[1].papers) >= 9  # the missed week and a half, in one digest


def test_a_refused_address_is_tried_on_its_next_day_not_every_hour(world: World) -> None:
    """A 5xx refusal counts as that day's digest (not 23 more refusals that day); a 4xx one is
    tried again at the next tick. Their papers stay pending either way and arrive once."""
    start = datetime(2026, 11, 2, 0, tzinfo=UTC)
    subscribe(
        world,
        person("gone@example.org", start, timezone="Europe/Berlin", hour=8),
        person("busy@example.org", start, timezone="Europe/Berlin", hour=8),
    )
    world.smtp.refuse_rcpt_for["gone@example.org"] = "550 5.1.1 no such user"
    world.smtp.refuse_rcpt_for["busy@example.org"] = "451 4.3.0 try later"
    tried: Counter[str] = Counter()
    refuse = world.smtp.refuse_rcpt

    def counted(address: str) -> str | None:
        tried[address.lower()] += 1
        return refuse(address)

    world.smtp.refuse_rcpt = counted  # type: ignore[method-assign]
    world.hours(start, start + timedelta(hours=12))
    assert tried["gone@example.org"] == 1  # 07:00 UTC (08:00 in Berlin), then left for tomorrow
    assert tried["busy@example.org"] >= 5  # 07:00 to 12:00: each tick tries again (with its retries)
    world.smtp.refuse_rcpt_for.clear()
    world.hours(start + timedelta(hours=13), start + timedelta(days=1, hours=12))
    gone = world.to("gone@example.org")
    assert [s.at for s in gone] == [datetime(2026, 11, 3, 7, tzinfo=UTC)]
    assert set(gone[0].papers) == {"p20261101", "p20261102", "p20261103"}  # nothing lost
    busy = world.to("busy@example.org")
    assert busy[0].at == start + timedelta(hours=13) and len(busy) == 2
