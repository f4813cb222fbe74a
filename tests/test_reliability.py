"""Nothing lost, nothing twice: real ``digest`` processes against a real local API and aiosmtpd server,
through crashes (kill -9), outages, throttling, refusals, signals, a damaged store and a scheduler."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.models import CycleReport
from tests.conftest import STORE_URL_VARIABLE, cli_env, on_postgresql, pass_store, run_cli
from tests.servers import FakeHfApi, SmtpSink, free_port
from tests.test_end_to_end import DAY1, DAY2, EXPECTED, expected_ids, ids_in

PATIENCE = 60.0  # seconds a test waits for something that should happen in one or two


def wait_for(condition: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def subscribe_all(env: dict[str, str]) -> None:
    """The four subscribers of the end-to-end tests, in one ``digest import`` (one process, not four)."""
    lines = [json.dumps({"email": address, "rules": [rule], "name": None}) for address, (rule, _) in EXPECTED.items()]
    people = Path(env["DIGEST_DATA_DIR"]).with_name("people.jsonl")
    people.write_text("\n".join(lines) + "\n")
    result = run_cli("import", str(people), env=env)
    assert result.returncode == 0, result.stderr


def assert_exactly_once(smtp: SmtpSink, days: dict[str, list[dict[str, Any]]], dates: list[str]) -> None:
    """Every subscriber has every paper their rule matches in ``dates``, once, in at most one email."""
    for address, (_, pattern) in EXPECTED.items():
        want = expected_ids(days, dates, pattern)
        got = ids_in(smtp, address)
        assert len(got) == len(set(got)), f"{address} got a paper twice"
        assert set(got) == want, address


@pytest.fixture
def env(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> dict[str, str]:
    environment = cli_env(tmp_path / "data", hf_api, smtp)
    subscribe_all(environment)
    return environment


def test_kill_9_mid_send_then_rerun_delivers_exactly_once(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    smtp.delay_after, smtp.delay_seconds = 1, 60.0  # the server stalls on the second email
    first = start_cli("run", "--date", DAY2, env=env)
    try:
        wait_for(lambda: smtp.delaying == 1, "the second email to be in flight")
        # Meanwhile a second cycle is refused: it would interleave with the first.
        second = run_cli("run", "--date", DAY2, env=env)
        assert second.returncode == 1 and "busy" in second.stderr, second.stderr
        first.kill()  # SIGKILL: no handler, no cleanup
        first.wait(timeout=PATIENCE)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    wait_for(lambda: smtp.delaying == 0, "the server to drop the half-sent email")
    assert len(smtp.messages) == 1
    smtp.delay_after = None

    rerun = run_cli("run", "--date", DAY2, env=env)

    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])
    assert all(len(smtp.to(address)) <= 1 for address in EXPECTED)


def test_throttled_api_is_retried_until_it_answers(env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink) -> None:
    hf_api.script = [
        (503, {}, b"unavailable"),
        (503, {}, b"unavailable"),
        (429, {"Retry-After": "1"}, b"slow down"),
    ]
    result = run_cli("run", "--date", DAY2, env=env)
    assert result.returncode == 0, result.stderr
    assert "source down" not in result.stdout and "failed 0" in result.stdout
    first_four = hf_api.requests[:4]
    assert {r.query["date"] for r in first_four} == {DAY1}  # the same request, four times
    assert first_four[3].at - first_four[2].at >= 1.0  # Retry-After was honoured
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])


def test_a_day_the_api_was_down_is_fetched_later_and_the_digest_says_so(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "data", hf_api, smtp, DIGEST_LOOKBACK_DAYS="1")
    subscribe_all(env)
    hf_api.down = True
    down = run_cli("run", "--date", DAY1, env=env)  # a whole cycle without the API
    assert down.returncode == 1 and "source down: hf_papers" in down.stdout
    assert len(hf_api.requests) == 5  # every attempt made, then the day was remembered
    assert smtp.messages == []

    hf_api.down = False
    hf_api.script = [(503, {}, b"unavailable")] * 5  # next day: the missed day fails again, today works
    partial = run_cli("run", "--date", DAY2, env=env)
    assert partial.returncode == 1, partial.stderr
    assert smtp.messages
    for message in smtp.messages:
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert f"could not be reached for {DAY1}" in text

    recovered = run_cli("run", "--date", DAY2, env=env)
    assert recovered.returncode == 0, recovered.stderr
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "hf_papers down (2026-11-19)" in status.stdout and "days to fetch again" not in status.stdout


def test_transient_smtp_refusals_and_dropped_connections_are_retried(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    smtp.data_replies = ["451 4.3.0 try again later", "421 4.3.2 closing connection"]
    result = run_cli("run", "--date", DAY2, env=env)
    assert result.returncode == 0, result.stderr
    assert "failed 0" in result.stdout
    assert smtp.data_replies == []
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])
    assert "transient delivery error" in result.stderr and "451" in result.stderr


def test_a_refused_address_stays_pending_and_the_others_get_theirs(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    smtp.refuse_rcpt_for["bob@example.org"] = "550 5.1.1 mailbox unavailable"
    first = run_cli("run", "--date", DAY2, env=env)
    assert first.returncode == 1
    assert smtp.to("bob@example.org") == [] and smtp.to("alice@example.org")
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    bob_papers = len(expected_ids(hf_api.days, [DAY1, DAY2], EXPECTED["bob@example.org"][1]))
    assert f"bob@example.org: {bob_papers} paper(s) — last refusal: SMTP 550" in status.stdout
    assert "alice@example.org" not in status.stdout

    smtp.refuse_rcpt_for.clear()
    again = run_cli("run", "--date", DAY2, env=env)
    assert again.returncode == 0 and "sent 1" in again.stdout
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])
    assert "pending: nothing" in run_cli("status", env=env).stdout


def test_sigterm_during_a_run_finishes_the_email_being_sent(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    smtp.delay_after, smtp.delay_seconds = 1, 1.0
    run = start_cli("run", "--date", DAY2, env=env)
    wait_for(lambda: smtp.delaying == 1, "the second email to be in flight")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=PATIENCE)
    assert run.returncode == 0, err
    assert "stopped early" in out and "SIGTERM" in err
    assert len(smtp.messages) == 2  # the email in flight was finished, and no other was started
    smtp.delay_after = None
    rest = run_cli("run", "--date", DAY2, env=env)
    assert rest.returncode == 0, rest.stderr
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])


# -- digest serve ---------------------------------------------------------------------------------


def redated(entries: list[dict[str, Any]], day: date) -> list[dict[str, Any]]:
    """The sample's entries as if listed on ``day`` (serve runs as of the real today)."""
    moved = copy.deepcopy(entries)
    for entry in moved:
        entry["paper"]["submittedOnDailyAt"] = f"{day.isoformat()}T08:00:00.000Z"
    return moved


@pytest.fixture
def today_api(hf_api: FakeHfApi) -> Iterator[dict[str, list[dict[str, Any]]]]:
    today = datetime.now(UTC).date()
    sample = {DAY1: hf_api.days[DAY1], DAY2: hf_api.days[DAY2]}
    listed = {(today - timedelta(days=1)).isoformat(): DAY1, today.isoformat(): DAY2}
    for served, source in listed.items():
        hf_api.days[served] = redated(sample[source], date.fromisoformat(served))
    yield {served: hf_api.days[served] for served in listed}


class Service:
    def __init__(self, env: dict[str, str], cron: str) -> None:
        self.port = free_port()
        self.env = {**env, "DIGEST_SCHEDULE__CRON": cron, "DIGEST_WEB__PORT": str(self.port)}
        self.process = start_cli("serve", env=self.env)

    def health(self) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        except httpx.TransportError:
            return None

    def stop(self, sig: signal.Signals) -> tuple[int, str]:
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=PATIENCE)
        return self.process.returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def test_serve_runs_the_scheduled_cycle_and_stops_cleanly_mid_send(
    env: dict[str, str], smtp: SmtpSink, today_api: dict[str, list[dict[str, Any]]], request: pytest.FixtureRequest
) -> None:
    smtp.delay_after, smtp.delay_seconds = 1, 1.0
    service = Service(env, cron="*/5 * * * * *")  # every five seconds, seconds field first
    try:
        wait_for(lambda: service.health() is not None, "the web server")
        first = service.health()
        assert first is not None and first.status_code == 200 and first.json()["last_cycle"] is None
        wait_for(lambda: smtp.delaying == 1, "the scheduled cycle to be sending its second email")
        code, err = service.stop(signal.SIGTERM)
    finally:
        service.kill()
    assert code == 0, err
    assert "SIGTERM" in err and "stopped cleanly" in err
    assert len(smtp.messages) == 2
    status = run_cli("status", env=service.env)
    if on_postgresql(request.config):
        # serve's scheduler queued the digests and its worker was the one stopped mid-send (README,
        # "Past one machine"): the cycle itself is done, and the rest waits in the workers' queue.
        assert "scheduled" in status.stdout and "queued for the workers: 2 digest(s)" in status.stdout, status.stdout
    else:
        assert "scheduled" in status.stdout and "stopped" in status.stdout, status.stdout
    assert "next scheduled run:" in status.stdout

    smtp.delay_after = None
    rest = run_cli("run", env=env)
    assert rest.returncode == 0, rest.stderr
    assert_exactly_once(smtp, today_api, list(today_api))


def test_serve_catches_up_after_downtime_and_reports_a_failed_cycle(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=2)
    with pass_store(tmp_path / "data") as store:  # the service last ran two days ago
        store.record_cycle(CycleReport(as_of=long_ago.date(), started_at=long_ago, finished_at=long_ago))
    hf_api.down = True
    service = Service(env, cron="0 0 * * *")  # midnight: it passed while the service was down

    def caught_up() -> bool:
        answer = service.health()
        return answer is not None and (answer.json().get("last_cycle") or {}).get("trigger") == "catch-up"

    try:
        wait_for(caught_up, "the catch-up cycle")
        health = service.health()
        assert health is not None and health.status_code == 503
        body = health.json()
        assert body["status"] == "failing" and body["last_cycle"]["outcome"] == "failed"
        assert body["last_cycle"]["sources"][0]["ok"] is False
        code, err = service.stop(signal.SIGINT)
    finally:
        service.kill()
    assert code == 0, err
    assert smtp.messages == []


# -- a damaged store ------------------------------------------------------------------------------


@pytest.mark.tinydb_only("a truncated digest.json repaired from its backup and journal")
def test_a_truncated_store_stops_everything_until_doctor_repairs_it(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    assert run_cli("run", "--date", DAY2, env=env).returncode == 0
    sent = len(smtp.messages)
    path = tmp_path / "data" / "digest.json"
    damaged = path.read_bytes()[:-100]
    path.write_bytes(damaged)

    run = run_cli("run", "--date", DAY2, env=env)
    assert run.returncode == 1
    assert str(path) in run.stderr and "untouched" in run.stderr and "digest doctor --repair" in run.stderr
    serve = run_cli("serve", env={**env, "DIGEST_WEB__PORT": str(free_port())})
    assert serve.returncode == 1 and str(path) in serve.stderr
    check = run_cli("doctor", env=env)
    assert check.returncode == 1 and "corrupt or truncated" in check.stderr
    assert path.read_bytes() == damaged

    fixed = run_cli("doctor", "--repair", env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert "restored" in fixed.stdout
    assert run_cli("doctor", env=env).returncode == 0

    again = run_cli("run", "--date", DAY2, env=env)
    assert again.returncode == 0, again.stderr
    assert "sent 0" in again.stdout  # the backup predates the sends; the replayed journal remembers them
    assert len(smtp.messages) == sent


# -- export and import ----------------------------------------------------------------------------


def test_export_then_import_is_all_or_nothing(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    exported = tmp_path / "subscribers.jsonl"
    assert run_cli("export", str(exported), env=env).returncode == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["email"] for line in lines] == sorted(EXPECTED)
    assert lines[0] == {"email": "alice@example.org", "rules": ["4090"], "name": None, "layout": "full"}

    other = cli_env(tmp_path / "other", None, None)
    if on_postgresql(request.config):  # another deployment: a store of its own
        other[STORE_URL_VARIABLE] = request.getfixturevalue("postgres_server").new_database()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        exported.read_text().splitlines()[0]
        + '\n{"email": "not an address", "rules": ["x"]}\n\n{"email": "e@example.org", "rules": ["!!"]}\n'
        + '{"email": "alice@example.org", "rules": ["gpu"]}\n'
    )
    refused = run_cli("import", str(bad), env=other)
    assert refused.returncode == 2
    assert f"{bad}:2:" in refused.stderr and f"{bad}:4:" in refused.stderr and f"{bad}:5:" in refused.stderr
    assert "already on line 1" in refused.stderr and "nothing was imported" in refused.stderr
    assert "no subscribers yet" in run_cli("subscribers", env=other).stdout

    imported = run_cli("import", str(exported), env=other)
    assert imported.returncode == 0 and "imported 4" in imported.stdout
    assert run_cli("export", env=other).stdout == exported.read_text()


class SignalKilledStartUp(Exception):
    """The SIGTERM reached the handler that was there before ``serve`` installed its own."""


@pytest.mark.tinydb_only("serve's start-up on the TinyDB file; the PostgreSQL roles have their own test")
def test_a_stop_during_serves_start_up_ends_it_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGTERM that arrives while ``serve`` still reads the store (seconds at 10,000 subscribers)
    is heard: serve returns once the read is done, and starts neither the web nor the scheduler.
    Before, it met the default handler and the process died mid-read (exit -15)."""
    from digest.ops import service
    from digest.settings import load_settings

    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    read_while_told_to_stop = service.must_catch_up

    def must_catch_up(settings: Any) -> bool:
        signal.raise_signal(signal.SIGTERM)
        return read_while_told_to_stop(settings)

    def started(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("started after the stop")

    def killed(signum: int, frame: Any) -> None:
        raise SignalKilledStartUp

    monkeypatch.setattr(service, "must_catch_up", must_catch_up)
    monkeypatch.setattr(service, "start_web", started)
    monkeypatch.setattr(service, "make_scheduler", started)
    previous = signal.signal(signal.SIGTERM, killed)
    try:
        with caplog.at_level("INFO", logger="digest"):
            service.serve(settings)
        assert signal.getsignal(signal.SIGTERM) is killed, "serve gave the previous handler back"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "received SIGTERM" in caplog.text and "stopped before the service started" in caplog.text
