"""The schedule's arithmetic, when a start must catch up, and what /healthz concludes from the cycles."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from digest.clock import cron_trigger, last_fire, next_fire
from digest.cycle.days import catch_up_days
from digest.cycle.schedule import needs_catch_up
from digest.web.health import assess

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
SEVEN = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)


def cycle(started: datetime, ok: bool = True, **extra: Any) -> dict[str, Any]:
    return {"started_at": started.isoformat(), "ok": ok, "as_of": started.date().isoformat(), **extra}


def test_five_fields_or_six_with_seconds() -> None:
    daily = cron_trigger("0 7 * * *", "UTC")
    assert last_fire(daily, NOW) == SEVEN
    assert next_fire(daily, NOW) == SEVEN + timedelta(days=1)
    every_ten = cron_trigger("*/10 * * * * *", "UTC")
    assert last_fire(every_ten, NOW + timedelta(seconds=15)) == NOW + timedelta(seconds=10)
    with pytest.raises(ValueError, match="expected 5 fields"):
        cron_trigger("0 7 * *", "UTC")


def test_last_fire_respects_the_time_zone_and_sparse_schedules() -> None:
    paris = cron_trigger("0 7 * * *", "Europe/Paris")
    assert last_fire(paris, NOW) == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # 07:00 CET
    monthly = cron_trigger("0 0 1 * *", "UTC")
    assert last_fire(monthly, NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert last_fire(cron_trigger("0 0 29 2 *", "UTC"), NOW) is None  # no 29 February within a year


def test_catch_up_only_after_a_missed_or_failed_scheduled_time() -> None:
    assert not needs_catch_up([], SEVEN)  # never ran: nothing was missed
    assert not needs_catch_up([cycle(SEVEN + timedelta(seconds=1))], SEVEN)
    assert needs_catch_up([cycle(SEVEN - timedelta(days=1))], SEVEN)  # down at 07:00 today
    assert needs_catch_up([cycle(SEVEN + timedelta(seconds=1), ok=False)], SEVEN)  # ran, but failed
    assert needs_catch_up([cycle(SEVEN + timedelta(seconds=1), dry_run=True), cycle(SEVEN - timedelta(days=1))], SEVEN)


def test_health_ok_failing_and_missed() -> None:
    since = NOW - timedelta(days=3)
    status, body = assess([cycle(SEVEN + timedelta(seconds=2))], SEVEN, NOW, GRACE, since)
    assert status == 200 and body["status"] == "ok" and body["last_cycle"]["outcome"] == "ok"

    status, body = assess(
        [cycle(SEVEN + timedelta(seconds=2), ok=False, errors=["SMTP 451"])], SEVEN, NOW, GRACE, since
    )
    assert status == 503 and body["status"] == "failing" and body["last_cycle"]["errors"] == ["SMTP 451"]

    yesterday = [cycle(SEVEN - timedelta(days=1))]
    status, body = assess(yesterday, SEVEN, NOW, GRACE, since)
    assert status == 503 and body["status"] == "missed"
    # Within the grace period the cycle may still be running.
    assert assess(yesterday, SEVEN, SEVEN + timedelta(minutes=30), GRACE, since)[0] == 200


def test_health_of_a_new_service_counts_only_times_after_it_started() -> None:
    assert assess([], SEVEN, NOW, GRACE, serving_since=NOW - timedelta(minutes=5))[0] == 200
    status, body = assess([], SEVEN, NOW, GRACE, serving_since=SEVEN - timedelta(days=1))
    assert status == 503 and body["status"] == "missed"


def test_failed_days_are_fetched_again_for_catchup_days_then_given_up() -> None:
    failed = [date(2026, 11, 1), date(2026, 11, 9), date(2026, 11, 10), date(2026, 11, 20)]
    again, given_up = catch_up_days(failed, as_of=date(2026, 11, 23), catchup_days=14)
    assert again == [date(2026, 11, 10), date(2026, 11, 20)]  # within 14 days of the 23rd
    assert given_up == [date(2026, 11, 1), date(2026, 11, 9)]


def test_one_refused_address_degrades_but_does_not_fail_health() -> None:
    since = NOW - timedelta(days=3)
    at = SEVEN + timedelta(seconds=2)
    refused_one = cycle(at, ok=False, failed=1, refused=1, sent=4, errors=["SMTP 550 for bob"])
    status, body = assess([refused_one], SEVEN, NOW, GRACE, since)
    assert status == 200 and body["status"] == "degraded" and "1 address" in body["problem"]
    # Refused everyone (a login refusal is server-wide, so it is not counted as `refused`): failing.
    everyone = cycle(at, ok=False, failed=5, refused=0, sent=0)
    assert assess([everyone], SEVEN, NOW, GRACE, since)[0] == 503
    # A refusal on a day a source was also down: failing, for the source.
    with_source_down = cycle(at, ok=False, failed=1, refused=1, sent=4, sources=[{"name": "hf_papers", "ok": False}])
    assert assess([with_source_down], SEVEN, NOW, GRACE, since)[0] == 503


@pytest.mark.parametrize(
    ("cron", "weekdays"),
    [
        ("0 7 * * 0", {"Sun"}),
        ("0 7 * * 7", {"Sun"}),
        ("0 7 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 7 * * 1,3", {"Mon", "Wed"}),
        ("0 7 * * */2", {"Sun", "Tue", "Thu", "Sat"}),
        ("0 7 * * 5-7", {"Fri", "Sat", "Sun"}),
        ("0 7 * * mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 7 * * *", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
    ],
)
def test_numeric_weekdays_count_from_sunday_as_in_crontab(cron: str, weekdays: set[str]) -> None:
    """APScheduler counts from Monday: ``1-5`` passed through ran Tuesday to Saturday."""
    trigger = cron_trigger(cron, "UTC")
    fire = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)  # a Saturday
    seen = set()
    for _ in range(14):
        following = next_fire(trigger, fire + timedelta(minutes=1))
        assert following is not None
        fire = following
        seen.add(fire.strftime("%a"))
    assert seen == weekdays


def test_a_weekday_past_seven_is_refused() -> None:
    with pytest.raises(ValueError, match="0-7"):
        cron_trigger("0 7 * * 8", "UTC")
