"""The scale-out recipe run for real: ``compose.postgres.yaml`` with ``compose.postgres.local.yaml``
(every image built here on the engine's Debian base, nothing pulled: PostgreSQL from Debian's package
and an aiosmtpd sink in Mailpit's place), brought up by the real compose in the private Docker daemon
of ``tests/test_container.py``: PostgreSQL, two web replicas, the scheduler, two workers and the sink,
on the compose network. The test adds only what a test needs (a file of its own, last): a static feed
server on that network as the one source, a cron of every minute, its own secrets and free host ports.

A person subscribed with ``docker compose exec web digest subscribe`` gets the scheduler's cycle from a
worker (the sink records the sending peer), both replicas answer /healthz and see the same store, a
one-click unsubscribe on one replica is seen by the other, and everything stops cleanly.

Skipped, with the reason, where no engine or compose can run; ``CONTAINER_TESTS=required`` (CI) fails instead.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import ROOT
from tests.servers import host_ports
from tests.test_container import (  # engine: the fixture, shared with that module
    DIGEST_UID,
    Engine,
    compose_command,
    engine,  # noqa: F401
    skip_or_fail,
)

pytestmark = pytest.mark.container

DIGEST_SERVICES = ("web", "scheduler", "worker-1", "worker-2")
SINK_DIR = "/var/mail/sink"
RULE = "diffusion"
PAPERS = {  # title: whether it matches RULE
    "Video diffusion at scale": True,
    "Latent diffusion for speech": True,
    "A survey of graph databases": False,
}
# The scheduler's first cycle comes at the next minute; its digest then goes through the queue.
MAIL_DEADLINE_SECONDS = 180
HEALTH_DEADLINE_SECONDS = 120


def feed_xml() -> str:
    items = "".join(
        f"<item><title>{title}</title><link>https://papers.example.org/{n}</link><guid>paper-{n}</guid>"
        f"<description>{title}: an abstract.</description></item>"
        for n, title in enumerate(PAPERS)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Papers</title>{items}</channel></rss>'


def override_file(tmp_path: Path) -> Path:
    """The test's own compose file: secrets in tmp_path, the feed server, a cron of every minute."""
    password = tmp_path / "pg_password.txt"
    password.write_text(uuid.uuid4().hex)
    password.chmod(0o644)  # read by PostgreSQL's uid 999 on its first start
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"postgres:5432:digest:digest:{password.read_text()}\n")
    pgpass.chmod(0o600)  # libpq reads it only if 0600 and owned by the image's user
    os.chown(pgpass, DIGEST_UID, DIGEST_UID)
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "feed.xml").write_text(feed_xml())
    papers.chmod(0o755)
    (papers / "feed.xml").chmod(0o644)
    digest_env = {
        "DIGEST_PUBLIC_URL": "https://digest.example.org",
        "DIGEST_SCHEDULE__CRON": "* * * * *",
        "DIGEST_SOURCES__HF_PAPERS__ENABLED": "false",
        "DIGEST_SOURCES__FEEDS": json.dumps([{"name": "papers", "url": "http://papers:8000/feed.xml"}]),
    }
    quick = {"interval": "1s", "timeout": "5s", "retries": 30}
    services: dict[str, Any] = {name: {"environment": digest_env} for name in DIGEST_SERVICES}
    services["web"]["healthcheck"] = quick
    services["postgres"] = {"healthcheck": quick}
    services["mailpit"] = {"healthcheck": quick}
    services["papers"] = {
        "image": "digest-smtp-sink:latest",
        "command": ["/usr/bin/python3", "-m", "http.server", "8000", "--directory", "/srv"],
        "volumes": [f"{papers}:/srv:ro"],
    }
    override = {
        "services": services,
        "secrets": {"pg_password": {"file": str(password)}, "pgpass": {"file": str(pgpass)}},
    }
    path = tmp_path / "compose.test.yaml"
    path.write_text(yaml.safe_dump(override))
    return path


@pytest.fixture
def scale_out(engine: Engine, tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:  # noqa: F811
    """``compose(*args)`` for this test's project; ``down -v`` at the end whatever happened."""
    if os.geteuid() != 0:  # the engine runs as root; so must whoever hands the pgpass secret to uid 10001
        skip_or_fail("the scale-out compose test needs root to give the pgpass secret to the image's user")
    project = f"digestpg{uuid.uuid4().hex[:8]}"
    first, second, mailpit = host_ports(3)  # first-second: a range the web replicas each take one port of
    env = {
        **engine.env,
        "BASE_IMAGE": engine.base_image,
        "WEB_HOST_PORTS": f"{first}-{second}",
        "MAILPIT_PORT": str(mailpit),
    }
    files = [ROOT / "compose.postgres.yaml", ROOT / "compose.postgres.local.yaml", override_file(tmp_path)]
    command = [*compose_command(engine), "--project-name", project, "--project-directory", str(ROOT)]
    for file in files:
        command += ["--file", str(file)]

    def compose(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert result.returncode == 0, f"compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    try:
        yield compose
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=180)


def web_port(compose: Callable[..., subprocess.CompletedProcess[str]], index: int) -> int:
    """The host port of web replica ``index`` (each took one of the range)."""
    return int(compose("port", "--index", str(index), "web", "8080").stdout.strip().rsplit(":", 1)[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_healthz(compose: Callable[..., subprocess.CompletedProcess[str]], index: int) -> int:
    """Web replica ``index``'s host port, once its /healthz answers 200 there."""
    port = web_port(compose, index)
    give_up = time.monotonic() + HEALTH_DEADLINE_SECONDS
    while True:
        try:
            if get(port, "/healthz")[0] == 200:
                return port
        except OSError:
            pass
        if time.monotonic() > give_up:
            logs = compose("logs", "--tail", "30", "web", check=False).stdout
            pytest.fail(f"web replica {index} gave no /healthz on port {port}:\n{logs}")
        time.sleep(1)


def sink_messages(compose: Callable[..., subprocess.CompletedProcess[str]]) -> list[EmailMessage]:
    """What the sink kept in its Maildir, read through `compose exec`."""
    script = (
        "import json, mailbox; box = mailbox.Maildir('" + SINK_DIR + "', create=False); "
        "print(json.dumps([box.get_bytes(key).decode('latin-1') for key in box.keys()]))"
    )
    raw = json.loads(compose("exec", "-T", "mailpit", "/usr/bin/python3", "-c", script).stdout)
    return [email.message_from_string(text, policy=email.policy.default) for text in raw]


def wait_for_mail(compose: Callable[..., subprocess.CompletedProcess[str]]) -> list[EmailMessage]:
    give_up = time.monotonic() + MAIL_DEADLINE_SECONDS
    while not sink_messages(compose):
        if time.monotonic() > give_up:
            logs = compose("logs", "--tail", "30", "scheduler", "worker-1", "worker-2", check=False).stdout
            pytest.fail(f"no digest reached the sink in {MAIL_DEADLINE_SECONDS} s:\n{logs}")
        time.sleep(2)
    time.sleep(3)  # a second copy would have come by now
    return sink_messages(compose)


def addresses(docker: Engine, compose: Callable[..., subprocess.CompletedProcess[str]], service: str) -> set[str]:
    ids = compose("ps", "-q", service).stdout.split()
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return {ip for cid in ids for ip in docker.docker("inspect", "--format", template, cid).stdout.split()}


def loopback_health(compose: Callable[..., subprocess.CompletedProcess[str]], index: int) -> dict[str, Any]:
    """/healthz asked inside replica ``index`` (from loopback: the details, with the last cycle)."""
    script = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/healthz', timeout=5).read().decode())"
    answer: dict[str, Any] = json.loads(
        compose("exec", "-T", "--index", str(index), "web", "python3", "-c", script).stdout
    )
    return answer


def test_scale_out_compose_sends_through_workers_and_replicas_share_the_store(
    engine: Engine,  # noqa: F811
    scale_out: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    compose = scale_out
    compose("build", "web", "postgres", "mailpit", timeout=1500)
    # The web (one replica first: it makes the shared signing key), workers and feed; PostgreSQL
    # and the sink come up first and healthy, as the services' depends_on say.
    compose("up", "--detach", "--no-build", "web", "worker-1", "worker-2", "papers", timeout=300)
    wait_for_healthz(compose, 1)
    subscribed = compose("exec", "-T", "web", "digest", "subscribe", "alice@example.org", "-k", RULE)
    assert "alice@example.org" in subscribed.stdout + subscribed.stderr
    compose("up", "--detach", "--no-build", "--scale", "web=2", "web", "scheduler", timeout=300)
    ports = [wait_for_healthz(compose, index) for index in (1, 2)]
    assert len(set(ports)) == 2

    messages = wait_for_mail(compose)
    assert [m["To"] for m in messages] == ["alice@example.org"], [m["To"] for m in messages]
    digest = messages[0]
    plain = digest.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    for title, matches in PAPERS.items():
        assert (title in text) == matches, (title, text)
    peer = digest["X-Peer"].strip("()").split(",")[0].strip("'\"")
    workers = addresses(engine, compose, "worker-1") | addresses(engine, compose, "worker-2")
    assert peer in workers, f"sent from {peer}, not a worker ({workers})"

    # Both replicas answer through their published port, and see the same cycle in the store.
    for port in ports:
        status, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", body
    for _ in range(3):  # the schedule fires each minute: a new cycle may land between the two reads
        cycles = [loopback_health(compose, index)["last_cycle"] for index in (1, 2)]
        if cycles[0] is not None and cycles[0] == cycles[1]:
            break
    assert cycles[0] is not None and cycles[0] == cycles[1], cycles

    # One-click unsubscribe on one replica; the other sees it.
    link = urlsplit(digest["List-Unsubscribe"].strip("<>").split(">")[0])
    page = f"{link.path}?{link.query}"
    assert "Unsubscribe?" in get(ports[1], page)[1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports[0]}{page}",
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    status, shown = get(ports[1], page)
    assert status == 200 and "Not subscribed" in shown, shown
    listed = compose("exec", "-T", "--index", "2", "web", "digest", "subscribers")
    assert "alice@example.org" not in listed.stdout

    stopped = compose("stop", "--timeout", "30", timeout=180)
    assert stopped.returncode == 0
    for service in (*DIGEST_SERVICES, "postgres"):
        stopped_ids = compose("ps", "--all", "-q", service).stdout.split()  # compose v2 lists running ones alone
        assert stopped_ids, f"no {service} container to check"
        for cid in stopped_ids:
            state = engine.state(cid)
            assert not state["Running"] and state["ExitCode"] == 0, (service, state, engine.logs(cid))
    down = compose("down", "--volumes", timeout=180)
    assert down.returncode == 0
    assert compose("ps", "--all", "-q").stdout.strip() == ""
