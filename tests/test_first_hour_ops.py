"""Issue 26, the operator's side: /metrics, the access log, the empty-weekday flag, backup and restore.

Real ``digest`` processes (``serve``, ``run``, ``backup``, ``restore``, ``status``) against the fake
Hugging Face API and the SMTP sink of tests/servers.py, all on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from digest.cycle.coverage import quiet_sources
from digest.settings import redacted
from digest.state.backend import open_backend
from tests.conftest import STORE_URL_VARIABLE, cli_env, on_postgresql, run_cli
from tests.servers import FakeHfApi, SmtpSink, free_port
from tests.test_reliability import PATIENCE, start_cli, wait_for

THU, FRI, SAT, MON = "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-23"
YEARLY = "0 7 1 1 *"  # serve's own schedule stays out of the way: no catch-up, nothing missed


class Serving:
    """A ``digest serve`` subprocess on a free port; ``get`` talks to it over HTTP."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**env, "DIGEST_SCHEDULE__CRON": YEARLY, "DIGEST_WEB__PORT": str(self.port)}
        self.process = start_cli("serve", env=self.env)
        self.stderr = ""
        wait_for(self.up, "digest serve to answer")

    def up(self) -> bool:
        assert self.process.poll() is None, self.process.communicate()[1]
        try:
            self.get("/healthz")
        except httpx.TransportError:
            return False
        return True

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=10)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            _, self.stderr = self.process.communicate(timeout=PATIENCE)
            assert self.process.returncode == 0, self.stderr
        return self.stderr


@contextmanager
def serving(env: dict[str, str]) -> Iterator[Serving]:
    service = Serving(env)
    try:
        yield service
    finally:
        if service.process.poll() is None:
            service.stop()


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, labels): value}`` from the Prometheus text format, parsed by prometheus-client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def subscribed_env(tmp_path: Path, hf_api: FakeHfApi, smtp: SmtpSink, **extra: str) -> dict[str, str]:
    env = cli_env(tmp_path / "data", hf_api, smtp, DIGEST_LOOKBACK_DAYS="1", **extra)
    ok(run_cli("subscribe", "ada@example.org", "-k", "diffusion", env=env))
    return env


def restore_env(env: dict[str, str], data_dir: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """``env`` for a restore into the empty ``data_dir``: on the PostgreSQL pass with an empty database
    of its own too (a restore loads the tables into store.url, which must hold no digest rows)."""
    fresh = {**env, "DIGEST_DATA_DIR": str(data_dir)}
    if on_postgresql(request.config):
        fresh[STORE_URL_VARIABLE] = request.getfixturevalue("postgres_server").new_database()
    return fresh


def store_view(env: dict[str, str]) -> tuple[object, ...]:
    """What the store of ``env`` holds, through the StoreBackend methods (to compare two stores)."""
    with open_backend(env.get(STORE_URL_VARIABLE, "tinydb:"), Path(env["DIGEST_DATA_DIR"]), write=False) as store:
        people = store.subscribers()
        return (
            people,
            {person.email: store.delivered_ids(person.email) for person in people},
            {person.email: store.votes(person.email) for person in people},
            store.seen_count,
            store.source_states(),
            store.failures(),
            store.cycles(last=100),
            store.departed_count(),
        )


# -- /metrics ---------------------------------------------------------------------------------------


def test_metrics_come_from_the_serving_process_and_only_to_allowed_clients(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    """Scraped over HTTP from a real ``digest serve``: the last cycle, sources, subscribers. Through a
    trusted proxy, the client named in X-Forwarded-For decides; claiming loopback gets nobody in."""
    env = subscribed_env(
        tmp_path,
        hf_api,
        smtp,
        DIGEST_WEB__TRUSTED_PROXIES="127.0.0.1",
        DIGEST_WEB__METRICS_ALLOW="127.0.0.0/8,::1/128,198.51.100.0/24",
    )
    ok(run_cli("subscribe", "bob@example.org", "-k", "zzzqqq", env=env))
    ok(run_cli("unsubscribe", "bob@example.org", env=env))
    ok(run_cli("run", "--date", FRI, env=env))
    sent = len(smtp.messages)
    assert sent == 1
    with serving(env) as service:
        direct = service.get("/metrics")
        assert direct.status_code == 200, direct.text
        assert direct.headers["content-type"].startswith("text/plain; version=0.0.4")
        values = metrics_of(direct.text)
        assert values[("digest_last_cycle_success", ())] == 1
        assert values[("digest_last_cycle_outcome", (("outcome", "ok"),))] == 1
        assert values[("digest_last_cycle_outcome", (("outcome", "failed"),))] == 0
        assert values[("digest_last_cycle_emails", (("result", "sent"),))] == sent
        assert values[("digest_last_cycle_emails", (("result", "failed"),))] == 0
        assert values[("digest_last_cycle_pending_digests", ())] == 0
        assert values[("digest_last_cycle_papers", (("stage", "fetched"),))] == len(hf_api.days[FRI])
        assert values[("digest_source_fetched_papers", (("source", "hf_papers"),))] == len(hf_api.days[FRI])
        assert values[("digest_source_up", (("source", "hf_papers"),))] == 1
        assert values[("digest_source_unusually_empty", (("source", "hf_papers"),))] == 0
        assert values[("digest_subscribers", (("state", "active"),))] == 1
        assert values[("digest_subscribers", (("state", "unsubscribed"),))] == 1
        assert values[("digest_last_cycle_duration_seconds", ())] >= 0
        assert values[("digest_last_cycle_timestamp_seconds", ())] > 1.7e9
        assert ("digest_next_cycle_timestamp_seconds", ()) in values

        # A change made by another process is seen at the next scrape (the keeper reloads).
        ok(run_cli("subscribe", "cy@example.org", "-k", "gpu", env=env))
        again = metrics_of(service.get("/metrics").text)
        assert again[("digest_subscribers", (("state", "active"),))] == 2

        # Prometheus behind the reverse proxy (a trusted peer) is allowed by its own address ...
        assert service.get("/metrics", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200
        # ... a visitor through the proxy is not, also when it claims to be loopback itself.
        for forwarded in ("203.0.113.9", "127.0.0.1, 203.0.113.9", "::1, 203.0.113.9"):
            refused = service.get("/metrics", **{"X-Forwarded-For": forwarded})
            assert refused.status_code == 403, forwarded
            assert "digest_" not in refused.text


def test_metrics_can_be_switched_off_and_stay_off_the_network_by_default(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    env = subscribed_env(tmp_path, hf_api, smtp, DIGEST_WEB__METRICS_ALLOW="[]")
    with serving(env) as service:
        assert service.get("/metrics").status_code == 404
    # Default (loopback only), with no proxy trusted: loopback itself is served, but a loopback
    # peer that forwards someone (a reverse proxy on this host that was not listed) is not.
    env = subscribed_env(tmp_path / "default", hf_api, smtp)
    with serving(env) as service:
        assert "digest_subscribers" in service.get("/metrics").text
        response = service.get("/metrics", **{"X-Forwarded-For": "203.0.113.9"})
        assert response.status_code == 403 and "digest_subscribers" not in response.text


# -- the access log ---------------------------------------------------------------------------------


def test_the_access_log_is_optional_and_never_shows_a_token(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> None:
    env = subscribed_env(tmp_path, hf_api, smtp)
    ok(run_cli("run", "--date", FRI, env=env))
    unsubscribe_url = str(smtp.messages[0]["List-Unsubscribe"]).strip("<>")
    path = unsubscribe_url.removeprefix("https://digest.example.org")
    real_token = path.split("token=", 1)[1]
    assert path.startswith("/unsubscribe?token=") and len(real_token) > 20

    with serving({**env, "DIGEST_WEB__ACCESS_LOG": "true"}) as service:
        assert service.get(path).status_code == 200  # the page with its button: nothing changes on a GET
        service.get("/manage?done=saved&token=SECRETMANAGE123")
        service.get("/confirm?%74oken=SECRETENCODED456")  # the app decodes the name too
        service.get("/check-inbox?t=SECRETSHORT789")
        log = service.stop()
    assert "logger=uvicorn.access" in log and "GET /unsubscribe?token=[redacted] HTTP/1.1" in log
    assert "/manage?done=saved&token=[redacted]" in log
    assert "/confirm?%74oken=[redacted]" in log and "/check-inbox?t=[redacted]" in log
    for secret in (real_token, "SECRETMANAGE123", "SECRETENCODED456", "SECRETSHORT789"):
        assert secret not in log

    with serving(env) as service:  # off by default
        service.get("/manage?token=SECRETMANAGE123")
        log = service.stop()
    assert "GET /manage" not in log and "SECRETMANAGE123" not in log


# -- a source that answers with nothing on a weekday ------------------------------------------------


def test_an_empty_weekday_after_normal_days_is_flagged_in_status_healthz_and_metrics(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    """The fake API lists papers on Thursday and Friday, then answers "[]" for Monday: that is a
    broken upstream, not a quiet day. Saturday's empty list is not flagged."""
    env = subscribed_env(tmp_path, hf_api, smtp)
    for day in (THU, FRI, SAT):
        ok(run_cli("run", "--date", day, env=env))
    calm = ok(run_cli("status", env=env))
    assert "unusually empty" not in calm.stdout  # a Saturday with nothing is a Saturday
    monday = ok(run_cli("run", "--date", MON, env=env))  # the source answered: not a failure to retry
    assert "listed no papers" in monday.stderr
    status = ok(run_cli("status", env=env))
    usual = (len(hf_api.days[THU]) + len(hf_api.days[FRI])) // 2
    assert (
        "source hf_papers: unusually empty: Hugging Face listed no papers in the cycle as of "
        f"{MON}, though it usually lists about {usual} papers" in status.stdout
    )
    with serving(env) as service:
        health = service.get("/healthz")
        assert health.status_code == 200  # degraded, not down: the container stays healthy
        body = health.json()
        assert body["status"] == "degraded" and body["quiet_sources"] == ["hf_papers"]
        assert f"Hugging Face listed no papers in the cycle as of {MON}" in body["problem"]
        values = metrics_of(service.get("/metrics").text)
        assert values[("digest_source_unusually_empty", (("source", "hf_papers"),))] == 1
        assert values[("digest_source_up", (("source", "hf_papers"),))] == 1
        assert values[("digest_source_fetched_papers", (("source", "hf_papers"),))] == 0


def cycle(as_of: str, **counts: Any) -> dict[str, Any]:
    return {
        "as_of": as_of,
        "started_at": f"{as_of}T07:00:00+00:00",
        "sources": [{"name": name, "fetched": n, "ok": True} for name, n in counts.items()],
    }


def test_a_source_is_judged_by_its_own_history() -> None:
    """Same rule as the email's coverage receipt: the calendar, then the source's usual count."""
    days = ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19"]
    small = [cycle(day, hf_papers=40, blog=1) for day in days]
    quiet = quiet_sources([*small, cycle(FRI, hf_papers=0, blog=0)], lookback_days=1)
    assert list(quiet) == ["hf_papers"]  # a feed that lists one thing is allowed an empty day
    assert "usually lists about 40 papers" in quiet["hf_papers"]
    assert quiet_sources([*small, cycle(SAT, hf_papers=0)], lookback_days=1) == {}
    busy_feed = [cycle(day, blog=25) for day in days]
    assert list(quiet_sources([*busy_feed, cycle(FRI, blog=0)], lookback_days=1)) == ["blog"]
    assert list(quiet_sources([cycle(FRI, hf_papers=0)], lookback_days=2)) == ["hf_papers"]  # no history: calendar
    assert quiet_sources([cycle(FRI, feed=0)], lookback_days=2) == {}
    down = [*small, {**cycle(FRI), "sources": [{"name": "hf_papers", "fetched": 0, "ok": False}]}]
    assert quiet_sources(down, lookback_days=1) == {}  # down is reported as down, not as empty


# -- backup and restore -----------------------------------------------------------------------------


def test_backup_while_serving_then_restore_into_an_empty_dir_sends_nothing_twice(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = subscribed_env(tmp_path, hf_api, smtp)
    ok(run_cli("run", "--date", FRI, env=env))
    assert len(smtp.messages) == 1
    backup = tmp_path / "backups" / "digest.tar.gz"
    backup.parent.mkdir()
    with serving(env) as service:
        made = ok(run_cli("backup", str(backup), env=env, timeout=PATIENCE))
        assert service.get("/healthz").status_code == 200  # serve kept running
    assert f"to {backup}" in made.stdout
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert list(backup.parent.iterdir()) == [backup]  # no temp file left beside it
    with tarfile.open(backup) as archive:
        names = archive.getnames()
    store = "store.postgresql/subscribers.copy" if on_postgresql(request.config) else "digest.json"
    assert store in names and "secret_key" in names and "digest.lock" not in names

    restored = restore_env(env, tmp_path / "restored" / "data", request)
    ok(run_cli("restore", str(backup), env=restored))
    assert (tmp_path / "restored" / "data" / "secret_key").read_text() == (tmp_path / "data" / "secret_key").read_text()
    assert "ada@example.org" in ok(run_cli("subscribers", env=restored)).stdout
    again = ok(run_cli("run", "--date", FRI, env=restored))
    assert "sent 0" in again.stdout
    assert len(smtp.messages) == 1  # nothing re-sent from the restored store


def test_restore_refuses_a_dir_with_data_and_a_file_that_is_no_backup(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = subscribed_env(tmp_path, hf_api, smtp)
    backup = tmp_path / "digest.tar.gz"
    ok(run_cli("backup", str(backup), env=env))
    before = sorted(os.listdir(tmp_path / "data"))

    into_data = run_cli("restore", str(backup), env=env)
    assert into_data.returncode == 2
    if on_postgresql(request.config):  # the data is in the database (data_dir holds no file yet)
        refusal = (
            f"digest: error: cannot restore {backup}: the PostgreSQL store {redacted(env[STORE_URL_VARIABLE])} "
            "is not empty (1 subscribers): restore into an empty database (create a new one, or drop this "
            "one's digest tables first); nothing was restored"
        )
    else:
        refusal = (
            f"digest: error: data_dir {tmp_path / 'data'} is not empty: restore only into an empty or missing "
            "directory (move the current one aside first)"
        )
    assert into_data.stderr.strip().splitlines() == [refusal]
    after = sorted(os.listdir(tmp_path / "data"))
    # On PostgreSQL data_dir held no lock file yet; the refused restore's lock is all it leaves (as below).
    assert after == before or (on_postgresql(request.config) and after == sorted([*before, "digest.lock"]))

    twice = run_cli("backup", str(backup), env=env)
    assert twice.returncode == 2 and "already exists" in twice.stderr and "Traceback" not in twice.stderr
    inside = run_cli("backup", str(tmp_path / "data" / "b.tar.gz"), env=env)
    assert inside.returncode == 2 and "inside the data directory" in inside.stderr

    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    empty = {**env, "DIGEST_DATA_DIR": str(tmp_path / "empty")}
    refused = run_cli("restore", str(junk), env=empty)
    assert refused.returncode == 2 and "is not a digest backup" in refused.stderr
    assert "Traceback" not in refused.stderr
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as archive:
        archive.add(backup, arcname="../escape.tar.gz")
    escaped = run_cli("restore", str(evil), env=empty)
    assert escaped.returncode == 2 and "'../escape.tar.gz'" in escaped.stderr
    assert not (tmp_path / "escape.tar.gz").exists()
    streamed = subprocess.run(
        [sys.executable, "-m", "digest", "backup", "-"], env=env, capture_output=True, timeout=PATIENCE, check=False
    )  # `docker compose exec -T digest digest backup - > digest.tar.gz`
    assert streamed.returncode == 0 and b"backed up" in streamed.stderr
    (tmp_path / "streamed.tar.gz").write_bytes(streamed.stdout)
    streamed_env = restore_env(env, tmp_path / "s", request)
    ok(run_cli("restore", str(tmp_path / "streamed.tar.gz"), env=streamed_env))
    if on_postgresql(request.config):
        assert store_view(streamed_env) == store_view(env)
    else:
        assert (tmp_path / "s" / "digest.json").read_bytes() == (tmp_path / "data" / "digest.json").read_bytes()
    left = sorted(p.name for p in (tmp_path / "empty").iterdir()) if (tmp_path / "empty").exists() else []
    assert left in ([], ["digest.lock"])  # nothing restored; a later restore still finds it empty
