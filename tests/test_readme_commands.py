"""Every `digest` command the README shows in a shell block runs, as written, and succeeds.

The commands are read from README.md itself, so a command added there without a case here fails
the test: a self-hoster's first hour is spent typing exactly these lines. (`make` lines are run by
CI itself and the Quick start check; `docker compose` lines by tests/test_container.py.)
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.state.backend import open_backend
from tests.conftest import STORE_URL_VARIABLE, cli_env, on_postgresql, pass_store_url
from tests.servers import FakeHfApi, SmtpSink, free_port
from tests.test_reliability import today_api  # noqa: F401 (a fixture)

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    """The `digest …` lines of the README's ```sh blocks (with any `VAR=value` in front), one per
    command: `a && b` is two."""
    found: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]
                if words[:1] == ["digest"]:
                    found.append(re.sub(r"\s+#\s.*$", "", part).strip())  # as typed, without its comment
    return found


def test_every_digest_command_in_the_readme_runs(
    tmp_path: Path,
    hf_api: FakeHfApi,
    smtp: SmtpSink,
    today_api: dict[str, list[dict[str, Any]]],  # noqa: F811 (the fixture: papers listed today)
    request: pytest.FixtureRequest,
) -> None:
    postgresql = on_postgresql(request.config)
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, hf_api, smtp, DIGEST_WEB__PORT=str(free_port()))
    today = date.today().isoformat()
    backups = tmp_path / "backups"
    backups.mkdir()
    ran: set[str] = set()

    def run(line: str, exit_code: int = 0, **more: str) -> subprocess.CompletedProcess[str]:
        """One README line, as a shell would split it, with the README's example paths moved under
        this test's temp dir (``more``: variables besides the line's own)."""
        # the backup the README makes is named by today's date; its restore line names an example day
        dated = re.sub(r"digest-\d{4}-\d{2}-\d{2}\.tar\.gz", f"digest-{today}.tar.gz", line)
        words = shlex.split(dated.replace("$(date +%F)", today))
        extra: dict[str, str] = {}
        while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            name, _, value = words.pop(0).partition("=")
            extra[name] = value
        words = [
            w.replace("/backups/", f"{backups}/").replace("/srv/digest/data", str(tmp_path / "restored")) for w in words
        ]
        for name, value in extra.items():
            extra[name] = value.replace("/srv/digest/data", str(tmp_path / "restored"))
        done = subprocess.run(
            [sys.executable, "-m", "digest", *words[1:]],
            env={**env, **more, **extra},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == exit_code, f"{line}\n{done.stdout}\n{done.stderr}"
        ran.add(line)
        return done

    commands = readme_commands()
    assert len(commands) >= 12, commands
    for line in commands:
        if line == "digest serve":
            process = subprocess.Popen(
                [sys.executable, "-m", "digest", "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
            )
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{env['DIGEST_WEB__PORT']}/healthz", timeout=5).status_code:
                            break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline and process.poll() is None, "digest serve did not start"
                        time.sleep(0.2)
                process.send_signal(signal.SIGTERM)
                _, err = process.communicate(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
            assert process.returncode == 0 and "stopped cleanly" in err, err
            ran.add(line)
        elif line == "digest doctor [--repair]":
            run("digest doctor")
            if postgresql:  # documented: `--repair` restores a TinyDB store; on PostgreSQL it is refused
                refused = run("digest doctor --repair", exit_code=2)
                assert refused.stderr.startswith("digest: error: --repair restores a TinyDB store"), refused.stderr
                assert "restore a `digest backup` into an empty one" in refused.stderr
            else:
                run("digest doctor --repair")
            ran.add(line)
        elif "restore" in line:
            if postgresql:  # documented: a restore needs an empty data dir and a database with no digest rows
                empty = request.getfixturevalue("postgres_server").new_database()
                run(line, **{STORE_URL_VARIABLE: empty})
                with (
                    open_backend(pass_store_url(), data_dir, write=False) as source,
                    open_backend(empty, tmp_path / "restored", write=False) as restored,
                ):
                    assert restored.subscribers() == source.subscribers() != []
                assert (tmp_path / "restored" / "secret_key").exists()
            else:
                run(line)
                assert (tmp_path / "restored" / "digest.json").exists()
        else:
            done = run(line)
            if line.startswith("digest run") and "--dry-run" not in line:
                assert "sent" in done.stdout + done.stderr
            if line.startswith("digest preview") and not (tmp_path / "ada.html").exists():
                assert "ada.html not written" in done.stdout, "a preview that writes nothing says so"
    assert set(commands) <= ran
    assert smtp.to("ada@example.org"), "the README's `digest run` mailed its subscriber"
    assert (data_dir / "archive").stat().st_mode & 0o777 == 0o700, "archived digests name their subscribers"
    assert (tmp_path / "subscribers.jsonl").exists()


def test_the_demo_outside_the_image_prints_paths_not_the_container_hint(tmp_path: Path) -> None:
    """Hosts with /.dockerenv (dev containers, CI) are not the image: its files are right here."""
    env = cli_env(tmp_path / "data", DIGEST_SOURCES__HF_PAPERS__BASE_URL=f"http://127.0.0.1:{free_port()}")
    done = subprocess.run(
        [sys.executable, "-m", "digest", "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"Open this in a browser: {tmp_path / 'data' / 'demo' / 'outbox'}" in done.stdout
    assert "inside the container" not in done.stdout and "--- the email" not in done.stdout
