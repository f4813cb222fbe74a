"""The Docker image, built and run for real: a private Docker daemon from ``../shared/container/engine.sh``,
the image built from this checkout, and the container talking to a local Daily Papers API and aiosmtpd
server on 127.0.0.1 (``--network host``, so no test traffic leaves the machine).

Skipped, with the reason, only when no engine can be started here (no ``engine.sh``, or it failed);
with ``CONTAINER_TESTS=required`` in the environment (CI sets it) that is a failure instead.
The daemon is stopped at the end when this module started it, and left running when it was already up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tests.conftest import ROOT
from tests.servers import FakeHfApi, SmtpSink, host_ports
from tests.test_end_to_end import DAY1, DAY2, DAY3, EXPECTED, expected_ids, ids_in, third_day

pytestmark = [
    pytest.mark.container,
    pytest.mark.tinydb_only("the image on its TinyDB volume; on PostgreSQL: test_container_postgres.py"),
]

ENGINE = ROOT.parent / "shared" / "container" / "engine.sh"
IMAGE = "digest:test"
DIGEST_UID = 10001
# What the image adds to its base: the venv and a user, nothing of the build toolchain. About 100 MB
# since matching uses numpy (its compiled core and OpenBLAS are ~55 MB of that; ~45 MB before it);
# about 131 MB since the PostgreSQL store (psycopg with its own libpq and the libraries it links).
MAX_ADDED_MB = 145
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@dataclass
class Engine:
    env: dict[str, str]
    base_image: str

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert result.returncode == 0, f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def state(self, container: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.docker("inspect", "--format", "{{json .State}}", container).stdout)
        return state

    def logs(self, container: str) -> str:
        result = self.docker("logs", "--tail", "40", container, check=False)
        return result.stdout + result.stderr

    def wait_healthy(self, container: str, deadline_seconds: float = 90) -> None:
        """Poll the container's own HEALTHCHECK (the image's probe of /healthz) until it reports healthy."""
        give_up = time.monotonic() + deadline_seconds
        while True:
            state = self.state(container)
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return
            if not state["Running"] or health == "unhealthy" or time.monotonic() > give_up:
                pytest.fail(f"{container} is not healthy ({health}, {state['Status']}):\n{self.logs(container)}")
            time.sleep(0.5)


def skip_or_fail(reason: str) -> NoReturn:
    """Where containers cannot run, say why and skip; where they must run (CI), fail."""
    if os.environ.get("CONTAINER_TESTS") == "required":
        pytest.fail(f"{reason} (CONTAINER_TESTS=required)")
    pytest.skip(reason)


def engine_command(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ENGINE), action], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """engine.sh up (idempotent); engine.sh down afterwards only if the daemon was not running before."""
    if not ENGINE.is_file():
        skip_or_fail(f"container tests need {ENGINE} to start a Docker engine; it is not there")
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    socket_dir = env.get("DIGEST_CONTAINER_DIR", "/tmp/digest-container")
    already_running = shutil.which("docker") is not None and (
        subprocess.run(
            ["docker", "info"],
            env={**env, "DOCKER_HOST": f"unix://{socket_dir}/docker.sock"},
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        == 0
    )
    up = engine_command("up", env)
    if up.returncode != 0:
        tail = "\n".join((up.stderr or up.stdout).strip().splitlines()[-5:])
        skip_or_fail(f"container tests skipped: no container engine could be started ({ENGINE} up):\n{tail}")
    exported = dict(
        word.split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ") for word in line.split()[1:]
    )
    try:
        yield Engine(env={**env, "DOCKER_HOST": exported["DOCKER_HOST"]}, base_image=exported["BASE_IMAGE"])
    finally:
        if not already_running:
            engine_command("down", env)


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    engine.docker(
        "build", "--build-arg", f"BASE_IMAGE={engine.base_image}", "--build-arg", f"VERSION={VERSION}",
        "--build-arg", "SOURCE=https://example.org/digest.git", "-t", IMAGE, str(ROOT), timeout=1200,
    )  # fmt: skip
    return IMAGE


def image_size_mb(engine: Engine, name: str) -> float:
    return int(engine.docker("image", "inspect", "--format", "{{.Size}}", name).stdout) / 1e6


def test_image_is_small_unprivileged_and_configured_for_the_volume(engine: Engine, image: str) -> None:
    config = json.loads(engine.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["Entrypoint"] == ["digest"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == f"{DIGEST_UID}:{DIGEST_UID}"  # numeric: runAsNonRoot and `chown` can check it
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert config["Labels"]["org.opencontainers.image.source"] == "https://example.org/digest.git"
    assert "/data" in config["Volumes"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "DIGEST_DATA_DIR=/data" in config["Env"]
    assert "DIGEST_WEB__HOST=0.0.0.0" in config["Env"]
    assert "healthz_url()" in " ".join(config["Healthcheck"]["Test"])  # /healthz where the settings say
    added = image_size_mb(engine, image) - image_size_mb(engine, engine.base_image)
    assert added < MAX_ADDED_MB, f"the image adds {added:.0f} MB to its base"
    script = "id -u; ls -A /app; ls -d /src /wheels /opt/venv/bin/pip 2>/dev/null; ls /opt/venv/bin/digest"
    listing = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script)
    assert listing.stdout.split() == [str(DIGEST_UID), "config", "/opt/venv/bin/digest"], listing.stdout
    version = engine.docker("run", "--rm", "--network", "none", image, "--version")
    assert version.stdout == f"digest {VERSION}\n"


def test_demo_runs_offline_from_the_installed_package(engine: Engine, image: str) -> None:
    """A non-editable install must carry the templates and the bundled sample: `digest demo` needs both."""
    demo = engine.docker("run", "--rm", "--network", "none", image, "demo", timeout=180)
    assert "using the bundled sample" in demo.stdout
    assert "Email (.eml): /data/demo/outbox/" in demo.stdout
    assert "sent 1" in demo.stdout
    # Those paths die with the container: the email itself is shown, and how to keep the files.
    assert "--- the email (text part; Subject:" in demo.stdout
    assert 'docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/demo:/data" IMAGE demo' in demo.stdout


def test_a_bind_mounted_data_dir_of_another_owner_is_one_line_and_exit_2(
    engine: Engine, image: str, tmp_path: Path
) -> None:
    """The most common container mistake: ./data created by the host user (here root, mode 0755)."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    for command in (["serve"], ["subscribe", "ada@example.org", "-k", "gpu"]):
        result = engine.docker(
            "run", "--rm", "--network", "none", "--volume", f"{data}:/data", image, *command, check=False, timeout=120
        )
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("ts=")]
        assert errors == [
            f"digest: error: /data is not writable by uid {DIGEST_UID}: on the host, chown {DIGEST_UID}:{DIGEST_UID} "
            f"the directory mounted there (e.g. sudo chown -R {DIGEST_UID}:{DIGEST_UID} ./data)"
        ], result.stderr
    assert list(data.iterdir()) == []


def test_healthcheck_follows_the_port_set_in_the_settings_file(engine: Engine, image: str, tmp_path: Path) -> None:
    """web.port only in the mounted TOML (no DIGEST_WEB__PORT): the image's HEALTHCHECK must still find it."""
    (port,) = host_ports(1)
    config = tmp_path / "digest.toml"
    config.write_text(f"[web]\nport = {port}\n", encoding="utf-8")
    config.chmod(0o644)
    name = f"digest-test-{uuid.uuid4().hex[:10]}-port"
    try:
        engine.docker(
            "run", "--detach", "--name", name, "--network", "host", "--health-interval", "1s",
            "--volume", f"{config}:/app/config/digest.toml:ro", image,
        )  # fmt: skip
        engine.wait_healthy(name)
        wanted = ("settings file /app/config/digest.toml", f"serving on http://0.0.0.0:{port}")
        deadline = time.monotonic() + 30  # the engine's log pipe may run behind the health check
        while not all(line in (logs := engine.logs(name)) for line in wanted) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert all(line in logs for line in wanted), logs
    finally:
        engine.docker("rm", "--force", name, check=False)


@pytest.fixture
def container_world(
    engine: Engine, image: str, hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:10]
    volume = f"digest-test-{tag}"
    (web_port,) = host_ports(1)
    settings = {
        "DIGEST_PUBLIC_URL": "https://digest.example.org",
        "DIGEST_WEB__PORT": str(web_port),
        "DIGEST_SOURCES__HF_PAPERS__BASE_URL": hf_api.base_url,
        "DIGEST_SMTP__HOST": "127.0.0.1",
        "DIGEST_SMTP__PORT": str(smtp.port),
        "DIGEST_SMTP__SECURITY": "none",
    }
    # The other way to configure the container: a settings file mounted where digest looks for it.
    config = tmp_path / "digest.toml"
    config.write_text('[smtp]\nfrom_address = "papers@digest.example.org"\n', encoding="utf-8")
    config.chmod(0o644)
    names: list[str] = []

    def start(name: str) -> str:
        options = [f"--env={key}={value}" for key, value in settings.items()]
        engine.docker(
            "run", "--detach", "--name", name, "--network", "host", "--volume", f"{volume}:/data",
            "--volume", f"{config}:/app/config/digest.toml:ro",
            "--health-interval", "1s", *options, image,
        )  # fmt: skip
        names.append(name)
        return name

    try:
        yield {"start": start, "tag": tag, "web_port": web_port}
    finally:
        for name in names:
            engine.docker("rm", "--force", name, check=False)
        engine.docker("volume", "rm", "--force", volume, check=False)


def in_container(engine: Engine, container: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI users have: `docker exec <container> digest ...`, as the image's user."""
    return engine.docker("exec", container, "digest", *args, check=False, timeout=180)


def stop_cleanly(engine: Engine, container: str) -> None:
    """`docker stop -t 10` sends SIGTERM and SIGKILLs after 10 s; exit code 0 means it stopped by itself in time."""
    engine.docker("stop", "--time", "10", container, timeout=60)
    state = engine.state(container)
    assert not state["Running"]
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} on SIGTERM:\n{engine.logs(container)}"
    assert not state["OOMKilled"]


def test_service_delivers_once_survives_restart_and_upgrade(
    engine: Engine, container_world: dict[str, Any], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    hf_api.days[DAY3] = third_day(hf_api.days)
    rule, pattern = EXPECTED["alice@example.org"]
    first = container_world["start"](f"digest-test-{container_world['tag']}-a")
    engine.wait_healthy(first)

    status = engine.docker("exec", first, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(DIGEST_UID)] * 4, f"PID 1 runs as {uids}"

    subscribed = in_container(engine, first, "subscribe", "alice@example.org", "-k", rule, "--name", "Alice")
    assert subscribed.returncode == 0, subscribed.stderr
    cycle = in_container(engine, first, "run", "--date", DAY2)
    assert cycle.returncode == 0, cycle.stderr
    assert "sent 1" in cycle.stdout
    assert len(smtp.to("alice@example.org")) == 1
    assert smtp.messages[0]["From"].addresses[0].addr_spec == "papers@digest.example.org"  # from the mounted file
    assert sorted(ids_in(smtp, "alice@example.org")) == sorted(expected_ids(hf_api.days, [DAY1, DAY2], pattern))
    # The container runs on the host network, so this request comes from loopback: the details.
    with urllib.request.urlopen(f"http://127.0.0.1:{container_world['web_port']}/healthz", timeout=10) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["last_cycle"] is not None  # the service sees the CLI's cycle

    stop_cleanly(engine, first)
    engine.docker("start", first)
    engine.wait_healthy(first)
    listed = in_container(engine, first, "subscribers")
    assert "alice@example.org" in listed.stdout, listed.stdout + listed.stderr
    again = in_container(engine, first, "run", "--date", DAY2)
    assert again.returncode == 0, again.stderr
    assert "sent 0" in again.stdout
    assert len(smtp.messages) == 1

    # An upgrade: a new container on the same volume carries on where the old one stopped.
    stop_cleanly(engine, first)
    second = container_world["start"](f"digest-test-{container_world['tag']}-b")
    engine.wait_healthy(second)
    later = in_container(engine, second, "run", "--date", DAY3)
    assert later.returncode == 0, later.stderr
    assert "sent 1" in later.stdout
    every = ids_in(smtp, "alice@example.org")
    assert len(every) == len(set(every)), "a paper reached alice twice"
    assert set(every) == expected_ids(hf_api.days, [DAY1, DAY2, DAY3], pattern)
    stop_cleanly(engine, second)


def compose_command(engine: Engine) -> list[str]:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], env=engine.env, capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return command
    skip_or_fail("compose.yaml not checked: neither `docker compose` nor `docker-compose` is installed here")


def port_target(entry: str | dict[str, Any]) -> str:
    """The container port of a ports entry: ``127.0.0.1:8025:8025/tcp`` (compose v1) or a mapping (v2)."""
    return str(entry["target"]) if isinstance(entry, dict) else entry.rsplit(":", 1)[-1].split("/")[0]


def volume_target(entry: str | dict[str, Any]) -> str:
    """The container path of a volumes entry: ``digest-data:/data:rw`` (compose v1) or a mapping (v2)."""
    return str(entry["target"]) if isinstance(entry, dict) else entry.split(":")[1]


def test_compose_file_wires_digest_to_the_mail_catcher(engine: Engine) -> None:
    """The real compose implementation reads compose.yaml; the digest service must reach Mailpit's SMTP port."""
    env = {**engine.env, "BASE_IMAGE": engine.base_image}
    result = subprocess.run(
        [*compose_command(engine), "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    digest = services["digest"]
    assert digest["build"]["args"]["BASE_IMAGE"] == engine.base_image
    assert os.path.samefile(digest["build"]["context"], ROOT)
    assert "/data" in [volume_target(volume) for volume in digest["volumes"]], digest["volumes"]
    smtp_env = digest["environment"]
    catcher = services[smtp_env["DIGEST_SMTP__HOST"]]
    assert catcher["image"].startswith("axllent/mailpit:")
    assert smtp_env["DIGEST_SMTP__PORT"] == "1025"  # Mailpit's SMTP port, inside the compose network
    assert smtp_env["DIGEST_SMTP__SECURITY"] == "none"
    assert "8025" in [port_target(port) for port in catcher["ports"]]  # Mailpit's web page, published
    assert not any("PASSWORD" in key and not key.endswith("_FILE") for key in smtp_env)
    # Both services say when they are ready; digest waits for Mailpit's.
    assert "healthz_url" in " ".join(digest["healthcheck"]["test"])
    assert catcher["healthcheck"]["test"] == ["CMD", "/mailpit", "readyz"]
    assert digest["depends_on"]["mailpit"]["condition"] == "service_healthy"
