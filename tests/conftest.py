"""Fixtures: a clean environment for every test, the bundled sample as API days, and real servers."""

from __future__ import annotations

import difflib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from digest.paths import DEMO_DIR, STORE_FILE
from digest.state.backend import StoreBackend, open_backend
from tests.postgres_server import postgres_server  # noqa: F401 (the --store postgresql pass)
from tests.servers import FakeHfApi, SmtpSink

ROOT = Path(__file__).resolve().parent.parent


STORE_URL_VARIABLE = "DIGEST_STORE__URL"


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Tests never read the developer's settings or data: no DIGEST_* variables, cwd in a temp dir.

    With ``--store postgresql`` every test gets an empty database of the session's PostgreSQL
    server as ``DIGEST_STORE__URL``: settings built in the test and the CLI it runs use it; and
    a test not marked ``tinydb_only`` that leaves a TinyDB store behind fails (it tested TinyDB
    again, not PostgreSQL).
    """
    for key in list(os.environ):
        if key.startswith("DIGEST_") or key.lower() in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    if on_postgresql(request.config):
        server = request.getfixturevalue("postgres_server")
        monkeypatch.setenv(STORE_URL_VARIABLE, server.new_database())
        yield
        if request.node.get_closest_marker("tinydb_only") is None:
            files = [p for p in tmp_path.rglob(STORE_FILE) if DEMO_DIR not in p.relative_to(tmp_path).parts]
            assert not files, f"a TinyDB store on the PostgreSQL pass (tinydb_only, or the pass's store): {files}"
        return
    yield


def pass_store_url() -> str:
    """The store this pass's tests use: ``DIGEST_STORE__URL`` (a PostgreSQL database) or TinyDB."""
    return os.environ.get(STORE_URL_VARIABLE, "tinydb:")


@contextmanager
def pass_store(data_dir: Path, write: bool = True) -> Iterator[StoreBackend]:
    """The store the settings and CLI of a test with ``data_dir`` use, open (as :func:`open_backend`):
    seed it or look into it the same way on either pass."""
    with open_backend(pass_store_url(), data_dir, write=write) as store:
        yield store


def on_postgresql(config: pytest.Config) -> bool:
    """Whether this run is the suite's PostgreSQL pass (``pytest --store postgresql``)."""
    return bool(config.getoption("--store") == "postgresql")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, skip what is about the TinyDB file itself (``tinydb_only``, with
    its reason) and the ``*_postgres.py`` modules, which choose their own databases and ran in
    the first pass already."""
    if not on_postgresql(config):
        return
    for item in items:
        marker = item.get_closest_marker("tinydb_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "about the TinyDB file"
            item.add_marker(pytest.mark.skip(reason=f"TinyDB only: {reason}"))
        elif item.path.stem.endswith("_postgres"):
            item.add_marker(pytest.mark.skip(reason="runs on PostgreSQL in the first pass"))


@pytest.fixture(scope="session")
def sample_days() -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = json.loads((ROOT / "digest" / "data" / "sample.json").read_text())["days"]
    return data


@pytest.fixture
def hf_api(sample_days: dict[str, list[dict[str, Any]]]) -> Iterator[FakeHfApi]:
    api = FakeHfApi(days={k: list(v) for k, v in sample_days.items()}).start()
    yield api
    api.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def cli_env(data_dir: Path, api: FakeHfApi | None = None, smtp: SmtpSink | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_") or k == STORE_URL_VARIABLE}
    env["DIGEST_DATA_DIR"] = str(data_dir)
    env["DIGEST_PUBLIC_URL"] = "https://digest.example.org"
    # Retries keep their shape (backoff, jitter, Retry-After, budget) but wait tenths of seconds.
    env["DIGEST_RETRY__INITIAL_DELAY_SECONDS"] = "0.05"
    env["DIGEST_RETRY__MAX_DELAY_SECONDS"] = "0.2"
    env["DIGEST_RETRY__FETCH_BUDGET_SECONDS"] = "5"
    env["DIGEST_RETRY__SEND_BUDGET_SECONDS"] = "5"
    if api is not None:
        env["DIGEST_SOURCES__HF_PAPERS__BASE_URL"] = api.base_url
    if smtp is not None:
        env["DIGEST_SMTP__HOST"] = "127.0.0.1"
        env["DIGEST_SMTP__PORT"] = str(smtp.port)
        env["DIGEST_SMTP__SECURITY"] = "none"
        env["DIGEST_SMTP__FROM_ADDRESS"] = "papers@digest.example.org"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m digest ARGS`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- snapshots of rendered output (tests/snapshots/); `pytest --update-snapshots` rewrites them --
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("tinydb", "postgresql"),
        default="tinydb",
        help="the store every test runs on: tinydb (default) or postgresql (a database per test)",
    )
    parser.addoption(
        "--update-snapshots", action="store_true", default=False, help="rewrite tests/snapshots/ from the output"
    )


@pytest.fixture
def snapshot(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``snapshot(name, text)``: compare ``text`` with ``tests/snapshots/name``, or rewrite it when asked."""
    update = bool(request.config.getoption("--update-snapshots"))

    def check(name: str, text: str) -> None:
        path = ROOT / "tests" / "snapshots" / name
        if update or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="")
            if not update:
                pytest.fail(f"new snapshot {path.name} written; check it and run again")
            return
        expected = path.read_bytes().decode("utf-8")
        if text != expected:
            diff = difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "snapshot", "now")
            shown = "".join(line[:300] for line in itertools.islice(diff, 40))
            pytest.fail(f"{path.name} differs (pytest --update-snapshots rewrites it if intended):\n{shown}")

    return check


@contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``mount_point`` (a full or read-only disk, for fault tests).
    Mounting needs root: elsewhere the test is skipped, but never in CI."""
    mount_point.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)]
    mounted = subprocess.run(command, capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr!r}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
