"""Downtime and clock games lose no day silently (issue 21): the days a source is asked for, the
cut-off, and what each subscriber receives, through real ``digest`` processes against a local
Daily Papers API and an aiosmtpd server, plus the pure window computation."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import digest.cycle.run
from digest.cycle.days import (
    capped_progress,
    day_ranges,
    describe_days,
    lost_days_notices,
    next_fetched_through,
    prune_anchor,
    source_days,
    window_days,
)
from digest.cycle.run import check_as_of, run_once
from digest.errors import SettingsError
from digest.models import Subscriber
from digest.settings import Settings, load_settings
from digest.state.backend import open_backend
from tests.conftest import cli_env, pass_store, run_cli
from tests.servers import FakeHfApi, SmtpSink
from tests.test_end_to_end import DAY2, EXPECTED, expected_ids, ids_in
from tests.test_reliability import assert_exactly_once, subscribe_all

D = date(2026, 10, 1)  # the first cycle's day; every run's day is in the past of the real clock


def on(offset: int) -> str:
    return (D + timedelta(days=offset)).isoformat()


def listing(sample: list[dict[str, Any]], day: date) -> list[dict[str, Any]]:
    """A day of its own: the sample's papers that some subscriber's rule matches, and three that none
    does, listed on ``day`` under ids unique to the day (``30NN.xxxxx``)."""
    matching = [
        e
        for e in sample
        if any(p.search(e["paper"]["title"] + " " + e["paper"]["summary"]) for _, p in EXPECTED.values())
    ]
    others = [e for e in sample if e not in matching][:3]
    entries = copy.deepcopy(matching + others)
    prefix = f"{3000 + (day - D).days + 10:04d}"
    for entry in entries:
        entry["paper"]["id"] = prefix + entry["paper"]["id"][4:]
        entry["paper"]["submittedOnDailyAt"] = f"{day.isoformat()}T08:00:00.000Z"
    return entries


def serve_days(api: FakeHfApi, first: int, last: int) -> list[str]:
    """Serve a listing on each day ``D+first`` .. ``D+last`` (and nothing from the bundled days)."""
    sample = api.days[DAY2]
    api.days.clear()
    for offset in range(first, last + 1):
        api.days[on(offset)] = listing(sample, D + timedelta(days=offset))
    return [on(offset) for offset in range(first, last + 1)]


def store_state(data_dir: Path) -> tuple[Any, ...]:
    """What the store holds, read through this pass's store (TinyDB or PostgreSQL)."""
    with pass_store(data_dir, write=False) as store:
        return (
            store.cycles(last=1000),
            store.source_states(),
            store.subscribers(),
            store.failures(),
            store.seen_count,
            store.prune_horizon,
        )


def plain(message: Any) -> str:
    return " ".join(message.get_body(preferencelist=("plain",)).get_content().split())


@pytest.fixture
def env(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> dict[str, str]:
    environment = cli_env(tmp_path / "data", hf_api, smtp)
    subscribe_all(environment)
    return environment


# -- downtime -------------------------------------------------------------------------------------


def test_days_when_digest_was_not_running_arrive_in_the_next_digest(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    days = serve_days(hf_api, -1, 5)  # look-back 2: the cycle of D covers D-1 and D
    assert run_cli("run", "--date", on(0), env=env).returncode == 0
    # A long weekend with the container stopped: no cycle on D+1, D+2, D+3.
    erin = run_cli("subscribe", "erin@example.org", "-k", "4090", env=env)  # subscribes meanwhile
    assert erin.returncode == 0, erin.stderr

    back = run_cli("run", "--date", on(4), env=env)

    assert back.returncode == 0, back.stderr
    assert_exactly_once(smtp, hf_api.days, days[:6])  # D+1 and D+2 too, though no cycle ran then
    assert {r.query["date"] for r in hf_api.requests[-4:]} == {on(1), on(2), on(3), on(4)}
    assert "not fetched" not in back.stderr and all("not fetched" not in plain(m) for m in smtp.messages)
    # A new subscriber's first digest is the look-back window, and so is what comes after it.
    alice_rule = EXPECTED["alice@example.org"][1]
    assert set(ids_in(smtp, "erin@example.org")) == expected_ids(hf_api.days, [on(3), on(4)], alice_rule)
    assert run_cli("run", "--date", on(5), env=env).returncode == 0
    assert_exactly_once(smtp, hf_api.days, days)
    erin_ids = ids_in(smtp, "erin@example.org")
    assert len(erin_ids) == len(set(erin_ids))
    assert set(erin_ids) == expected_ids(hf_api.days, [on(3), on(4), on(5)], alice_rule)

    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert f"caught up after downtime: papers listed between {on(1)} and {on(2)} were fetched late" in status.stdout


def test_a_gap_longer_than_catchup_days_says_which_days_are_lost(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    days = serve_days(hf_api, -1, 21)
    assert run_cli("run", "--date", on(0), env=env).returncode == 0
    first_emails = len(smtp.messages)

    back = run_cli("run", "--date", on(21), env=env)  # 20 days without a cycle; catchup_days 14

    # Exit 0: the cycle did all it could; the lost days are said, not retried.
    assert back.returncode == 0, back.stderr
    notice = f"Papers listed between {on(1)} and {on(7)} were not fetched from hf_papers and will not be"
    assert notice in " ".join(back.stderr.split())
    fetched_late = days[9:]  # D+8 .. D+21: within 14 days of D+21
    assert_exactly_once(smtp, hf_api.days, days[:2] + fetched_late)
    later = smtp.messages[first_emails:]
    assert {m["To"].addresses[0].addr_spec for m in later} == set(EXPECTED)
    for message in later:
        assert f"{notice}: digest was not running then, and it goes back at most catchup_days (14 days)." in plain(
            message
        )
    asked = {r.query["date"] for r in hf_api.requests}
    assert asked.isdisjoint(days[2:9])  # D+1 .. D+7 were never asked for

    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert (
        f"not fetched, for good: papers listed between {on(1)} and {on(7)} "
        f"(digest was not running then; catchup_days is 14; cycle as of {on(21)})"
    ) in status.stdout


# -- the clock ------------------------------------------------------------------------------------


def test_a_date_in_the_future_is_refused_and_changes_nothing(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    days = serve_days(hf_api, -1, 1)
    assert run_cli("run", "--date", on(0), env=env).returncode == 0
    data = tmp_path / "data"
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    held = store_state(data)
    requests, emails = len(hf_api.requests), len(smtp.messages)
    today = datetime.now(UTC).date()
    ahead = today + timedelta(days=39)

    refused = run_cli("run", "--date", ahead.isoformat(), env=env)

    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"--date {ahead.isoformat()} is in the future" in refused.stderr
    assert f"the latest allowed is {(today + timedelta(days=1)).isoformat()}" in refused.stderr
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before
    assert store_state(data) == held  # the store too, on either backend
    assert (len(hf_api.requests), len(smtp.messages)) == (requests, emails)

    assert run_cli("run", "--date", on(1), env=env).returncode == 0
    assert_exactly_once(smtp, hf_api.days, days)


def test_a_clock_that_jumps_ahead_and_back_loses_nothing(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's clock itself runs 39 days ahead for one cycle (nothing refuses that day: it is
    "today"), then comes back. The cycles after it must still deliver every day."""
    days = serve_days(hf_api, -1, 5)
    environment = cli_env(tmp_path / "data", hf_api, smtp)
    subscribe_all(environment)
    for key, value in environment.items():
        if key.startswith("DIGEST_"):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    clock = {"day": D}
    monkeypatch.setattr(digest.cycle.run, "utc_now", lambda: datetime.combine(clock["day"], datetime.min.time(), UTC))
    monkeypatch.setattr(digest.cycle.run, "today_in", lambda _zone: clock["day"])

    def cycle_on(offset: int) -> None:
        clock["day"] = D + timedelta(days=offset)
        report = run_once(settings)
        assert report.as_of == clock["day"] and report.failed == 0

    cycle_on(0)
    cycle_on(39)  # the clock jumped
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        assert store.prune_horizon == D - timedelta(days=settings.retention_days)
    cycle_on(1)  # and came back
    cycle_on(2)
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        people = store.subscribers()
    assert len(people) == len(EXPECTED)
    assert all(p.caught_up_to is not None and p.caught_up_to <= D + timedelta(days=2) for p in people)
    cycle_on(5)  # after two days without a cycle: D+3 is fetched late
    assert_exactly_once(smtp, hf_api.days, days)


# -- the pure parts -------------------------------------------------------------------------------


def test_days_of_a_cycle_after_downtime() -> None:
    after_weekend = source_days(D + timedelta(days=4), 2, 14, [], D)
    assert after_weekend.fetch == [D + timedelta(days=k) for k in (1, 2, 3, 4)]
    assert after_weekend.caught_up == [D + timedelta(days=1), D + timedelta(days=2)]
    assert after_weekend.not_fetched == [] and after_weekend.given_up == []

    first_ever = source_days(D, 2, 14, [], None)
    assert first_ever.fetch == window_days(D, 2) and first_ever.caught_up == []

    gap = source_days(D + timedelta(days=21), 2, 14, [D - timedelta(days=1), D + timedelta(days=10)], D)
    assert gap.fetch == [D + timedelta(days=k) for k in range(8, 22)]
    assert gap.not_fetched == [D + timedelta(days=k) for k in range(1, 8)]
    assert gap.given_up == [D - timedelta(days=1)]
    assert lost_days_notices({"hf_papers": gap, "deals": gap}, 14) == [
        f"Papers listed between {on(1)} and {on(7)} were not fetched from hf_papers, deals and will not be: "
        "digest was not running then, and it goes back at most catchup_days (14 days).",
        f"Papers listed on {on(-1)} were not fetched from hf_papers, deals and will not be: "
        "the source could not be reached for catchup_days (14 days).",
    ]

    ahead = source_days(D, 2, 14, [D + timedelta(days=30)], D + timedelta(days=39))  # a clock that ran ahead
    assert ahead.fetch == window_days(D, 2) and ahead.not_fetched == [] and ahead.given_up == []


def test_day_ranges_and_their_wording() -> None:
    picked = [D + timedelta(days=k) for k in (0, 1, 2, 5, 7, 8)]
    assert day_ranges(reversed(picked)) == [
        (D, D + timedelta(days=2)),
        (D + timedelta(days=5), D + timedelta(days=5)),
        (D + timedelta(days=7), D + timedelta(days=8)),
    ]
    assert describe_days(picked) == (f"between {on(0)} and {on(2)}, on {on(5)} and between {on(7)} and {on(8)}")
    assert describe_days([D]) == f"on {on(0)}"


def test_the_cut_off_and_subscribers_never_run_ahead() -> None:
    real = D + timedelta(days=3)
    assert prune_anchor(D + timedelta(days=39), real, D + timedelta(days=2)) == D + timedelta(days=2)
    assert prune_anchor(D + timedelta(days=39), D + timedelta(days=39), D) == D  # one jumped cycle moves nothing
    assert prune_anchor(D, real, None) == D
    people = [
        Subscriber("a@example.org", ("x",), caught_up_to=D + timedelta(days=38)),
        Subscriber("b@example.org", ("x",), caught_up_to=D),
        Subscriber("c@example.org", ("x",)),
    ]
    assert capped_progress(people, real) == [Subscriber("a@example.org", ("x",), caught_up_to=real)]


def test_a_replayed_old_date_does_not_move_the_fetch_mark_back_but_a_future_one_is_dropped() -> None:
    real = D + timedelta(days=10)
    assert next_fetched_through(None, D, real) == D  # the first cycle
    assert next_fetched_through(D + timedelta(days=9), D, real) == D + timedelta(days=9)  # `run --date` an old day
    assert next_fetched_through(D + timedelta(days=9), real, real) == real
    assert next_fetched_through(D + timedelta(days=49), D + timedelta(days=11), real) == D + timedelta(days=11)


def test_an_as_of_date_past_tomorrow_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest.cycle.run, "today_in", lambda _zone: D)
    settings = Settings()
    check_as_of(settings, D + timedelta(days=1))
    check_as_of(settings, D - timedelta(days=400))
    with pytest.raises(SettingsError, match=rf"as-of date {on(2)} is in the future: the latest allowed is {on(1)}"):
        check_as_of(settings, D + timedelta(days=2))


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    as_of=st.integers(min_value=0, max_value=60),
    lookback=st.integers(min_value=1, max_value=7),
    catchup=st.integers(min_value=1, max_value=30),
    failed=st.sets(st.integers(min_value=-40, max_value=70), max_size=8),
    fetched_through=st.one_of(st.none(), st.integers(min_value=-40, max_value=70)),
)
def test_a_cycles_days_keep_their_bounds_and_lose_nothing_silently(
    as_of: int, lookback: int, catchup: int, failed: set[int], fetched_through: int | None
) -> None:
    day = D + timedelta(days=as_of)
    owed = [D + timedelta(days=k) for k in sorted(failed)]
    through = None if fetched_through is None else D + timedelta(days=fetched_through)
    got = source_days(day, lookback, catchup, owed, through)
    window = window_days(day, lookback)
    fetch = set(got.fetch)

    assert got.fetch == sorted(fetch)
    assert set(window) <= fetch  # the look-back, always
    assert max(fetch) == day  # never past as_of
    assert all(d > day - timedelta(days=catchup) for d in fetch - set(window))  # never before the cap
    assert fetch.isdisjoint(got.not_fetched) and fetch.isdisjoint(got.given_up)
    assert set(got.caught_up) <= fetch
    # Every day owed, and every day since the last cycle, is fetched now or said to be lost.
    said = fetch | set(got.not_fetched) | set(got.given_up)
    assert {d for d in owed if d <= day} <= said
    if through is not None and through < day:
        since = {through + timedelta(days=k) for k in range(1, (day - through).days + 1)}
        assert since <= said
    else:
        assert got.caught_up == [] and got.not_fetched == []


@pytest.mark.parametrize("value", ["20261206", "2026-W49-7", "0001-01-01", "1999-12-31", "2026-13-01"])
def test_a_date_that_is_not_yyyy_mm_dd_or_too_old_is_one_line(value: str, tmp_path: Path) -> None:
    result = run_cli("run", "--date", value, "--dry-run", env=cli_env(tmp_path / "data"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("digest: error: --date")
