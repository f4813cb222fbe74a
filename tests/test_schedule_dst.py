"""Daylight saving never hangs or double-fires the schedule, and a killed first-ever cycle is caught up.

The clock is controlled: every function takes ``now``. Fire times are checked against a brute-force
oracle that walks the night minute by minute in UTC and applies the documented rules (a repeated
wall-clock time fires at its first occurrence; a skipped one fires at the first instant after the
gap), and every call runs under a deadline, so a loop that makes no progress fails instead of hanging.
"""

from __future__ import annotations

import itertools
import signal
import threading
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from digest.clock import cron_trigger, last_fire, next_fire
from digest.cycle.schedule import FireWindow, cycle_left_traces, needs_catch_up
from digest.models import CycleReport, Item, SourceReport, Subscriber
from digest.ops.service import CYCLE_JOB_ID, make_scheduler, must_catch_up
from digest.paths import JOURNAL_FILE
from digest.settings import Settings
from digest.state.store import Store, open_store
from digest.web.health import health_status
from tests.conftest import cli_env, pass_store
from tests.servers import FakeHfApi, SmtpSink
from tests.test_end_to_end import DAY1, DAY2, EXPECTED, expected_ids, ids_in
from tests.test_reliability import PATIENCE, Service, assert_exactly_once, redated, start_cli, subscribe_all, wait_for

# The 2026 transitions: (zone, local date of the change).
NIGHTS = [
    ("Europe/Berlin", date(2026, 3, 29)),  # 02:00 CET -> 03:00 CEST
    ("Europe/Berlin", date(2026, 10, 25)),  # 03:00 CEST -> 02:00 CET: 02:00-02:59 twice
    ("America/New_York", date(2026, 3, 8)),  # 02:00 EST -> 03:00 EDT
    ("America/New_York", date(2026, 11, 1)),  # 02:00 EDT -> 01:00 EST: 01:00-01:59 twice
]
DAILY = ["30 2 * * *", "0 2 * * *", "59 2 * * *", "0 7 * * *", "30 1 * * *"]
CRONS = [*DAILY, "*/15 * * * *"]
SECONDS_PER_CALL = 2.0  # a call takes about a millisecond; the old code never returned


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: SIGALRM interrupts a Python loop in the main thread."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def field_matches(spec: str, value: int) -> bool:
    if spec == "*":
        return True
    if spec.startswith("*/"):
        return value % int(spec[2:]) == 0
    return value == int(spec)


def oracle(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Fire times in [start, end) by walking UTC minutes; only "M H * * *" and "*/N * * * *" forms."""
    minute, hour = cron.split()[:2]
    tz = zoneinfo.ZoneInfo(zone)

    def matches(wall: datetime) -> bool:
        return field_matches(minute, wall.minute) and field_matches(hour, wall.hour)

    fires = []
    instant = start
    while instant < end:
        local = instant.astimezone(tz)
        wall = local.replace(tzinfo=None)
        fire = matches(wall) and local.fold == 0  # the second pass through a repeated hour never fires
        before = (instant - timedelta(minutes=1)).astimezone(tz)
        jump = (local.utcoffset() or timedelta(0)) - (before.utcoffset() or timedelta(0))
        if jump > timedelta(0):  # the clock just skipped [wall - jump, wall): those times fire now
            skipped = (wall - jump + timedelta(minutes=m) for m in range(int(jump.total_seconds() // 60)))
            fire = fire or any(matches(w) for w in skipped)
        if fire:
            fires.append(instant)
        instant += timedelta(minutes=1)
    return fires


def around(zone: str, night: date) -> tuple[datetime, datetime]:
    """From the local noon before the change to the local noon two days after, in UTC."""
    tz = zoneinfo.ZoneInfo(zone)
    noon = datetime(night.year, night.month, night.day, 12, tzinfo=tz)
    return (noon - timedelta(days=1)).astimezone(UTC), (noon + timedelta(days=2)).astimezone(UTC)


def scheduled(trigger: Any, start: datetime, end: datetime) -> list[datetime]:
    """The fire times a scheduler asks the trigger for, one after the other, as APScheduler does."""
    fires: list[datetime] = []
    with deadline(SECONDS_PER_CALL):
        fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        fires.append(fire)
        assert len(fires) < 1000
        with deadline(SECONDS_PER_CALL):
            fire = trigger.get_next_fire_time(fire, fire)
    return fires


@pytest.mark.parametrize("cron", CRONS)
@pytest.mark.parametrize(("zone", "night"), NIGHTS)
def test_the_scheduler_fires_each_time_once_and_always_later(cron: str, zone: str, night: date) -> None:
    settings = Settings(schedule={"cron": cron, "timezone": zone})
    job = make_scheduler(settings, threading.Event(), catch_up=False).get_job(CYCLE_JOB_ID)
    assert job is not None
    start, end = around(zone, night)

    fires = scheduled(job.trigger, start, end)

    utc = [f.astimezone(UTC) for f in fires]
    assert utc == oracle(cron, zone, start, end)
    assert all(b > a for a, b in itertools.pairwise(utc))  # strictly later in absolute time
    if cron in DAILY:
        days = [f.astimezone(zoneinfo.ZoneInfo(zone)).date() for f in fires]
        assert len(days) == len(set(days)) == 3, fires  # one fire on each of the three local days


@pytest.mark.parametrize(
    ("cron", "zone", "night", "expected"),
    [
        # Spring: 02:30 does not exist; it runs right after the gap, at 03:00 (Vixie cron).
        ("30 2 * * *", "Europe/Berlin", date(2026, 3, 29), "2026-03-29T03:00:00+02:00"),
        ("59 2 * * *", "America/New_York", date(2026, 3, 8), "2026-03-08T03:00:00-04:00"),
        # Autumn: 02:30 happens twice; it runs once, the first time.
        ("30 2 * * *", "Europe/Berlin", date(2026, 10, 25), "2026-10-25T02:30:00+02:00"),
        ("30 1 * * *", "America/New_York", date(2026, 11, 1), "2026-11-01T01:30:00-04:00"),
        ("30 2 * * *", "America/New_York", date(2026, 11, 1), "2026-11-01T02:30:00-05:00"),
    ],
)
def test_the_transition_night_fire_time(cron: str, zone: str, night: date, expected: str) -> None:
    start, end = around(zone, night)
    fires = scheduled(cron_trigger(cron, zone), start, end)
    assert [f.isoformat() for f in fires if f.date() == night] == [expected]


@pytest.mark.parametrize("cron", CRONS)
@pytest.mark.parametrize(("zone", "night"), NIGHTS)
def test_last_and_next_fire_answer_every_five_minutes_of_the_night(cron: str, zone: str, night: date) -> None:
    trigger = cron_trigger(cron, zone)
    tz = zoneinfo.ZoneInfo(zone)
    # The local day of the change and the next night up to 03:00: the old code hung from the
    # repeated 02:30 until the next day's.
    start = datetime(night.year, night.month, night.day, tzinfo=tz).astimezone(UTC)
    end = (datetime(night.year, night.month, night.day, 3, tzinfo=tz) + timedelta(days=1)).astimezone(UTC)
    fires = oracle(cron, zone, start - timedelta(days=1), end + timedelta(days=1))
    for step in range(int((end - start) / timedelta(minutes=5))):
        now = start + step * timedelta(minutes=5) + (step % 2) * timedelta(seconds=29)  # on and off the minute
        with deadline(SECONDS_PER_CALL):
            last, upcoming = last_fire(trigger, now), next_fire(trigger, now)
        assert last is not None and last.astimezone(UTC) == max(f for f in fires if f <= now), now
        assert upcoming is not None and upcoming.astimezone(UTC) == min(f for f in fires if f >= now), now


def test_healthz_answers_during_the_fall_back_day(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", schedule={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    second_pass = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET, the second time 02:45 shows
    with deadline(SECONDS_PER_CALL):
        status, body = health_status(settings, second_pass, serving_since=second_pass - timedelta(minutes=5))
    assert status == 200, body
    assert body["last_scheduled"] == "2026-10-25T02:30:00+02:00"
    assert body["next_run"] == "2026-10-26T02:30:00+01:00"
    later = datetime(2026, 10, 25, 12, tzinfo=UTC)  # and a service that has run since the day before
    with deadline(SECONDS_PER_CALL):
        status, body = health_status(settings, later, serving_since=later - timedelta(days=1))
    assert status == 503 and body["status"] == "missed"  # nothing ran at 02:30: said, not hung


# -- a killed first-ever cycle ---------------------------------------------------------------------

SEVEN = datetime(2026, 11, 23, 7, tzinfo=UTC)


def test_an_unrecorded_cycle_is_caught_up_a_new_store_waits() -> None:
    fetched = [{"name": "hf_papers", "failed_days": [], "last_attempt_at": "2026-11-23T07:00:03+00:00"}]
    assert not cycle_left_traces([], items_seen=0, deliveries_journaled=0)  # subscribers only: never ran
    assert not cycle_left_traces([{"name": "hf_papers", "failed_days": []}], 0, 0)
    assert cycle_left_traces(fetched, 0, 0)
    assert cycle_left_traces([], 12, 0)
    assert cycle_left_traces([], 0, 180)

    assert not needs_catch_up([], SEVEN)  # a new store waits for its first scheduled time
    assert needs_catch_up([], SEVEN, unrecorded_cycle=True)  # a first cycle was killed: catch up
    assert not needs_catch_up([], None, unrecorded_cycle=True)  # no scheduled time passed yet
    recorded = [{"started_at": (SEVEN + timedelta(seconds=1)).isoformat(), "ok": True}]
    assert not needs_catch_up(recorded, SEVEN, unrecorded_cycle=True)


@pytest.mark.tinydb_only("the traces a killed cycle leaves in TinyDB's file and journal")
def test_serve_at_start_reads_the_traces_of_a_killed_first_cycle(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", schedule={"cron": "0 0 * * *"})
    assert not must_catch_up(settings)  # no store yet
    with open_store(settings.data_dir):
        pass  # an empty store (as after `digest subscribe`): still nothing to catch up
    assert not must_catch_up(settings)

    now = datetime.now(UTC)
    with open_store(settings.data_dir) as store:  # the fetch checkpoint of a cycle killed afterwards
        store.record_source(SourceReport(name="hf_papers", fetched=1), [], now)
    assert must_catch_up(settings)

    with open_store(settings.data_dir) as store:  # once a cycle is recorded, the usual rule applies
        store.record_cycle(CycleReport(as_of=now.date(), started_at=now, finished_at=now))
    assert not must_catch_up(settings)


@pytest.mark.tinydb_only("the traces a killed cycle leaves in TinyDB's file and journal")
def test_stored_papers_alone_mark_a_killed_cycle(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", schedule={"cron": "0 0 * * *"})
    now = datetime.now(UTC)
    paper = Item(id="2611.00001", source="hf_papers", title="A", abstract="", url="", listed_on=now.date())
    with open_store(settings.data_dir) as store:
        store.upsert_items([paper], now)
    assert must_catch_up(settings)


@pytest.mark.tinydb_only("the traces a killed cycle leaves in TinyDB's file and journal")
def test_a_journal_alone_marks_a_killed_cycle(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", schedule={"cron": "0 0 * * *"})
    with open_store(settings.data_dir):
        pass
    (settings.data_dir / JOURNAL_FILE).write_text('{"email": "a@example.org", "items": {"x": "2026-11-20"}}\n')
    assert must_catch_up(settings)


@pytest.mark.tinydb_only("the traces a killed cycle leaves in TinyDB's file and journal")
def test_journaled_subscriber_changes_alone_are_no_cycle(tmp_path: Path) -> None:
    """Subscribing journals the change (and the flush folds it into deliveries.journal.1): no cycle ran."""
    settings = Settings(data_dir=tmp_path / "data", schedule={"cron": "0 0 * * *"})
    with open_store(settings.data_dir) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
    store = Store(settings.data_dir)
    store.remove_subscriber("ada@example.org")  # journaled, not folded: as if killed here
    del store
    assert not must_catch_up(settings)


@pytest.fixture
def killed_first_cycle(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> Iterator[tuple[dict[str, str], dict[str, list[dict[str, Any]]]]]:
    """Four subscribers, papers listed yesterday and today, and a first `digest run` killed mid-send."""
    env = cli_env(tmp_path / "data", hf_api, smtp)
    subscribe_all(env)
    today = datetime.now(UTC).date()
    listed = {(today - timedelta(days=1)).isoformat(): DAY1, today.isoformat(): DAY2}
    days = {served: redated(hf_api.days[source], date.fromisoformat(served)) for served, source in listed.items()}
    hf_api.days.update(days)

    smtp.delay_after, smtp.delay_seconds = 1, 60.0  # the server stalls on the second email
    first = start_cli("run", env=env)
    try:
        wait_for(lambda: smtp.delaying == 1, "the second email to be in flight")
        first.kill()  # SIGKILL: the cycle records nothing
        first.wait(timeout=PATIENCE)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    wait_for(lambda: smtp.delaying == 0, "the server to drop the half-sent email")
    smtp.delay_after = None
    assert len(smtp.messages) == 1
    with pass_store(tmp_path / "data", write=False) as store:
        assert store.cycles() == []  # the first cycle, never recorded
    yield env, days


def test_serve_catches_up_a_killed_first_ever_cycle(
    killed_first_cycle: tuple[dict[str, str], dict[str, list[dict[str, Any]]]], smtp: SmtpSink
) -> None:
    env, days = killed_first_cycle
    service = Service(env, cron="0 0 * * *")  # midnight UTC passed before the killed cycle

    def caught_up() -> bool:
        answer = service.health()
        return answer is not None and (answer.json().get("last_cycle") or {}).get("trigger") == "catch-up"

    def all_sent() -> bool:  # on PostgreSQL the cycle queues; serve's worker sends after it is recorded
        return all(
            set(ids_in(smtp, address)) >= expected_ids(days, list(days), pattern)
            for address, (_, pattern) in EXPECTED.items()
        )

    try:
        wait_for(caught_up, "the catch-up cycle")
        wait_for(all_sent, "the catch-up cycle's digests")
        health = service.health()
        assert health is not None and health.status_code == 200, health.text if health else None
        code, err = service.stop(signal.SIGTERM)
    finally:
        service.kill()
    assert code == 0, err
    assert "catching up now" in err
    assert_exactly_once(smtp, days, list(days))


@given(
    cron=st.sampled_from(["30 2 * * *", "0 7 * * *", "*/15 * * * *", "0 2 * * 0"]),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "UTC"]),
    steps=st.lists(st.integers(min_value=-3 * 3600, max_value=6 * 3600), min_size=1, max_size=25),
)
@hypothesis_settings(max_examples=60, deadline=None)
def test_the_healthz_fire_window_answers_as_the_searches_do(cron: str, zone: str, steps: list[int]) -> None:
    """``/healthz`` keeps last/next fire between probes (:class:`FireWindow`): around DST nights,
    with a clock that jumps back and forth, it must answer exactly what the searches answer."""
    trigger = cron_trigger(cron, zone)
    window = FireWindow(trigger)
    now = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # Berlin's fall-back night is the next one
    for step in steps:
        now += timedelta(seconds=step)
        assert window.around(now) == (last_fire(trigger, now), next_fire(trigger, now)), now
