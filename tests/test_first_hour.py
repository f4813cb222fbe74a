"""The first hour of a self-hoster (issue 26): every mistake a newcomer makes is one line naming the
value and what to do, with exit 2 — no traceback, no silent typo, no secret found bad at 07:00.

Real ``digest`` processes (``python -m digest``) against a real local API and SMTP server where a
cycle is needed; in-process only for help texts and the pieces that need a fault injected.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digest.ops.cli import app
from digest.settings import data_dir_problem, healthz_url, load_settings
from digest.state.files import write_atomically
from tests.conftest import cli_env, on_postgresql, pass_store, run_cli, tmpfs
from tests.servers import FakeHfApi, SmtpSink, free_port
from tests.test_end_to_end import DAY1

TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} (?:[A-Z]{3,5}|[+-]\d{2,4})")  # the one way the CLI shows a time
ANY_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}\S*(?: (?:[A-Z]{3,5}|[+-]\d{2,4}))?")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 and the CLI's error: one line, no traceback (``serve`` logs its start first: ``ts=...``)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("ts=")]
    assert len(lines) == 1 and lines[0].startswith("digest: error: "), result.stderr
    return lines[0]


# -- the data directory ----------------------------------------------------------------------------

READING = [("status",), ("subscribers",), ("export",), ("try", "4090"), ("doctor",), ("preview", "a@example.org")]
WRITING = [("run", "--date", DAY1), ("subscribe", "a@example.org", "-k", "gpu"), ("unsubscribe", "a@example.org")]


@pytest.mark.parametrize("command", READING + WRITING + [("demo",), ("serve",)], ids=lambda c: c[0])
def test_a_data_dir_that_is_a_file_is_one_line_for_every_command(command: tuple[str, ...], tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a directory\n")
    line = one_line_error(run_cli(*command, env=cli_env(a_file), timeout=60))
    assert f"data_dir {a_file} is a file, not a directory" in line and "DIGEST_DATA_DIR" in line
    assert a_file.read_text() == "not a directory\n"


@pytest.mark.parametrize("command", [("status",), ("subscribe", "a@example.org", "-k", "gpu")], ids=lambda c: c[0])
def test_a_data_dir_under_a_file_is_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("")
    line = one_line_error(run_cli(*command, env=cli_env(a_file / "inside")))
    assert f"is under {a_file}, which is a file" in line


@pytest.fixture
def read_only_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir with a subscriber, on a tmpfs remounted read-only. Mounting needs root."""
    with tmpfs(tmp_path / "disk", "4m") as mount_point:
        data_dir = mount_point / "data"
        assert run_cli("subscribe", "ada@example.org", "-k", "gpu", env=cli_env(data_dir)).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        yield data_dir


def test_a_read_only_data_dir_stops_serve_and_doctor_says_so(read_only_data_dir: Path) -> None:
    env = cli_env(read_only_data_dir, DIGEST_WEB__PORT=str(free_port()))
    started = time.monotonic()
    serve = run_cli("serve", env=env, timeout=60)
    assert time.monotonic() - started < 30  # it stops at once, it does not start and die at the first write
    assert "read-only" in one_line_error(serve) and str(read_only_data_dir) in serve.stderr

    doctor = run_cli("doctor", env=env)
    assert "read-only" in one_line_error(doctor) and "no problems found" not in doctor.stdout
    assert run_cli("subscribers", env=env).returncode == 0  # reading still works


def test_a_data_dir_of_another_uid_names_the_uid_and_the_chown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a container with a bind-mounted ./data of the host user (the test may run as root, which
    may write anywhere, so the kernel's answer is stood in for; the container test does it for real)."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr("digest.settings.in_container", lambda: True)
    problem = data_dir_problem(tmp_path, write=True)
    uid, gid = os.getuid(), os.getgid()
    assert problem == (
        f"{tmp_path} is not writable by uid {uid}: on the host, chown {uid}:{gid} the directory mounted there "
        f"(e.g. sudo chown -R {uid}:{gid} ./data)"
    )
    assert data_dir_problem(tmp_path, write=False) is None  # reading needs no more than a directory


# -- settings: typos, the file in use, relative paths, secrets --------------------------------------


def test_an_unknown_digest_variable_is_refused_with_the_nearest_name(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data", DIGEST_PUBLIC_URLL="https://x.example", DIGEST_DATADIR="/elsewhere")
    line = one_line_error(run_cli("status", env=env))
    assert "DIGEST_PUBLIC_URLL (did you mean DIGEST_PUBLIC_URL?)" in line
    assert "DIGEST_DATADIR (did you mean DIGEST_DATA_DIR?)" in line
    nested = one_line_error(run_cli("status", env=cli_env(tmp_path / "data", DIGEST_SMTP__HOTS="mail")))
    assert "DIGEST_SMTP__HOTS (did you mean DIGEST_SMTP__HOST?)" in nested
    # What digest itself reads is known: the settings file's variable, and every nested key.
    fine = cli_env(tmp_path / "data", DIGEST_CONFIG_FILE=str(tmp_path / "none.toml"), DIGEST_HTTP__TIMEOUT_SECONDS="3")
    (tmp_path / "none.toml").write_text("")
    assert run_cli("status", env=fine).returncode == 0


def test_config_option_names_the_file_and_relative_paths_are_from_the_working_directory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings_dir, work = tmp_path / "etc", tmp_path / "work"
    settings_dir.mkdir()
    work.mkdir()
    config = settings_dir / "digest.toml"
    config.write_text('data_dir = "relative-data"\n[schedule]\ncron = "30 6 * * *"\n')
    env = {k: v for k, v in cli_env(tmp_path).items() if k != "DIGEST_DATA_DIR"}

    subscribed = run_cli("--config", str(config), "subscribe", "ada@example.org", "-k", "gpu", env=env, cwd=work)
    assert subscribed.returncode == 0, subscribed.stderr
    assert (work / "relative-data").is_dir()  # the working directory, as documented
    if not on_postgresql(request.config):
        assert (work / "relative-data" / "digest.json").is_file()
    with pass_store(work / "relative-data", write=False) as store:
        assert store.subscriber("ada@example.org") is not None
    assert not (settings_dir / "relative-data").exists()

    status = run_cli("--config", str(config), "status", env=env, cwd=work)
    assert status.returncode == 0, status.stderr
    assert f"settings file {config}; data_dir {work / 'relative-data'}" in status.stdout
    assert "schedule.cron '30 6 * * *'" in status.stdout
    by_variable = run_cli("status", env={**env, "DIGEST_CONFIG_FILE": str(config)}, cwd=work)
    assert f"settings file {config}" in by_variable.stdout
    without = run_cli("status", env=env, cwd=work)
    assert f"no settings file ({work / 'config' / 'digest.toml'} does not exist)" in without.stdout

    missing = one_line_error(run_cli("--config", str(tmp_path / "nope.toml"), "status", env=env, cwd=work))
    assert f"--config {tmp_path / 'nope.toml'}: no such file" in missing


def test_settings_errors_quote_the_value_once_and_name_their_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = one_line_error(run_cli("status", env=cli_env(data_dir, DIGEST_PUBLIC_URL="notaurl")))
    assert url.count("notaurl") == 1 and "public_url:" in url and "DIGEST_PUBLIC_URL" in url
    across = one_line_error(run_cli("status", env=cli_env(data_dir, DIGEST_RETENTION_DAYS="10")))
    assert "bad settings: retention_days: retention_days (10) must be more than" in across
    assert "[set in DIGEST_RETENTION_DAYS]" in across, "no settings file: only the variable is named"
    config = tmp_path / "digest.toml"
    config.write_text("retention_days = 10\n", encoding="utf-8")
    in_file = one_line_error(run_cli("--config", str(config), "status", env=cli_env(data_dir)))
    assert f"[set in {config} or DIGEST_RETENTION_DAYS]" in in_file
    dkim = one_line_error(run_cli("status", env=cli_env(data_dir, DIGEST_DKIM__PRIVATE_KEY="x")))
    assert "dkim.selector:" in dkim and "DIGEST_DKIM__SELECTOR]" in dkim and ": dkim.selector is needed" in dkim


@pytest.mark.parametrize(
    ("variable", "content", "expected"),
    [
        ("DIGEST_SMTP__PASSWORD_FILE", None, "smtp.password_file: cannot read {path}: No such file or directory"),
        ("DIGEST_SMTP__PASSWORD_FILE", "", "smtp.password_file: {path} is empty"),
        ("DIGEST_SMTP__PASSWORD_FILE", "one\ntwo\n", "smtp.password_file: {path} holds more than one line"),
        ("DIGEST_DKIM__PRIVATE_KEY_FILE", "not a key", "dkim.private_key_file: not a PEM-encoded RSA private key"),
    ],
    ids=["password-missing", "password-empty", "password-two-lines", "dkim-not-a-key"],
)
def test_serve_and_run_check_every_secret_file_at_start(
    variable: str, content: str | None, expected: str, tmp_path: Path, hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    env = cli_env(tmp_path / "data", hf_api, smtp, DIGEST_WEB__PORT=str(free_port()), DIGEST_DKIM__SELECTOR="s1")
    env.update({variable: str(secret), "DIGEST_SMTP__USERNAME": "digest"})
    started = time.monotonic()
    serve = run_cli("serve", env=env, timeout=60)
    assert time.monotonic() - started < 30  # refused at start, not at the first cycle
    assert expected.format(path=secret) in one_line_error(serve)
    run = run_cli("run", "--date", DAY1, env=env)
    assert expected.format(path=secret) in one_line_error(run)
    assert hf_api.requests == [] and smtp.messages == []  # nothing fetched, nothing sent


def test_a_damaged_generated_secret_key_stops_serve(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("\n")
    serve = run_cli("serve", env=cli_env(data_dir, DIGEST_WEB__PORT=str(free_port())), timeout=60)
    assert f"secret_key: {data_dir / 'secret_key'} is empty" in one_line_error(serve)


def test_healthz_url_follows_the_port_and_host_of_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "digest.toml").write_text('[web]\nhost = "0.0.0.0"\nport = 9191\n')
    assert healthz_url() == "http://127.0.0.1:9191/healthz"
    (tmp_path / "config" / "digest.toml").write_text('[web]\nhost = "::"\nport = 9192\n')
    assert healthz_url(load_settings()) == "http://[::1]:9192/healthz"


# -- export and the other atomic writers --------------------------------------------------------------


def temp_files(*directories: Path) -> list[Path]:
    return [path for directory in directories for path in directory.glob(".*.tmp")]


def test_export_to_a_directory_or_a_missing_one_is_refused_and_leaves_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = cli_env(tmp_path / "data")
    assert run_cli("subscribe", "ada@example.org", "-k", "gpu", env=env).returncode == 0
    target = tmp_path / "exports"
    target.mkdir()
    line = one_line_error(run_cli("export", str(target), env=env))
    assert f"{target} is a directory: name a file, e.g. {target / 'subscribers.jsonl'}" in line
    missing = one_line_error(run_cli("export", str(tmp_path / "no" / "such" / "dir.jsonl"), env=env))
    assert "No such file or directory" in missing
    assert temp_files(tmp_path, target, tmp_path / "data") == []

    done = run_cli("export", str(target / "people.jsonl"), env=env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((target / "people.jsonl").stat().st_mode) == 0o600  # every subscriber's address
    if not on_postgresql(request.config):  # the store, too, where it is a file
        assert stat.S_IMODE((tmp_path / "data" / "digest.json").stat().st_mode) == 0o600
    assert temp_files(tmp_path, target, tmp_path / "data") == []


def test_an_atomic_write_that_fails_midway_leaves_no_temp_file_and_its_temp_was_private(tmp_path: Path) -> None:
    target = tmp_path / "subscribers.jsonl"
    seen_modes: list[int] = []

    def pieces() -> Iterator[bytes]:
        yield b'{"email": "ada@example.org"}\n'
        seen_modes.extend(stat.S_IMODE(path.stat().st_mode) for path in temp_files(tmp_path))
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, pieces())
    assert seen_modes == [0o600]  # one temp file, beside the target, readable by its owner only
    assert temp_files(tmp_path) == [] and not target.exists()


# -- exit codes and wording -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["unsubscribe", "preview"])
def test_an_unknown_subscriber_is_exit_2(command: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    assert run_cli("subscribe", "ada@example.org", "-k", "gpu", env=env).returncode == 0
    line = one_line_error(run_cli(command, "nobody@example.org", env=env))
    assert "no subscriber 'nobody@example.org'" in line and "digest subscribers" in line


def test_status_and_subscribers_say_the_outcome_plainly_with_one_time_format(
    tmp_path: Path, hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    env = cli_env(tmp_path / "data", hf_api, smtp, DIGEST_SCHEDULE__TIMEZONE="Europe/Berlin")
    assert run_cli("subscribe", "ada@example.org", "-k", "diffusion", env=env).returncode == 0
    assert run_cli("run", "--date", DAY1, env=env).returncode == 0
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    cycle = next(line for line in status.stdout.splitlines() if f"as of {DAY1}" in line)
    assert re.search(rf"^  {TIME.pattern} manual as of {DAY1}: ok; fetched \d+, .*; sources: hf_papers ok$", cycle)
    assert "ok: " not in status.stdout  # "hf_papers ok: failed" read as if the source failed
    listed = run_cli("subscribers", env=env)
    for output in (status.stdout, listed.stdout):
        shown = ANY_TIME.findall(output)
        assert shown and all(TIME.fullmatch(moment) for moment in shown), shown
    # the last delivery (the real send time), in the schedule's zone, named: CET or, in summer, CEST
    assert re.search(r"\bCES?T\b", listed.stdout), listed.stdout
    assert re.search(rf"source hf_papers: last success {TIME.pattern}", status.stdout)
    assert re.search(rf"next scheduled run: {TIME.pattern}", status.stdout)


def command_names() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(getattr(group, "commands", {}))


def test_help_shows_no_type_labels_or_braces() -> None:
    runner = CliRunner()
    names = command_names()
    assert {"run", "serve", "subscribe", "status", "export", "doctor"} <= set(names)
    for args in [["--help"]] + [[name, "--help"] for name in names]:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        leaked = re.findall(r"<[a-z][a-z_\[\] ]*>|\{[a-z_]+\}", result.output)
        assert leaked == [], (args, leaked, result.output)
    assert "Usage: digest subscribe [OPTIONS] EMAIL" in runner.invoke(app, ["subscribe", "--help"]).output
    assert "-k, --keyword RULE" in runner.invoke(app, ["subscribe", "--help"]).output


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "digest", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"digest {importlib.metadata.version('digest')}\n"


def test_serve_logs_its_settings_file_first_and_its_lifecycle_at_info(tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(tmp_path / "data", DIGEST_WEB__PORT=str(port), DIGEST_SCHEDULE__CRON="0 7 1 1 *")
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        service = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve"], env=env, cwd=tmp_path, stderr=stderr, stdout=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while "serving on" not in log.read_text() and service.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            service.send_signal(signal.SIGTERM)
            assert service.wait(timeout=30) == 0, log.read_text()
        finally:
            service.kill()
    lines = log.read_text().splitlines()
    assert "Traceback" not in log.read_text()
    assert "starting; no settings file" in lines[0] and f"data_dir {tmp_path / 'data'}" in lines[0], lines
    for event in ("starting;", "serving on", "received SIGTERM", "stopped cleanly"):
        line = next(line for line in lines if event in line)
        assert "level=info" in line, line
    assert re.search(rf"next cycle at {TIME.pattern}", log.read_text())


def test_a_typo_in_the_settings_file_names_the_nearest_key(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('publc_url = "https://papers.example.org"\n', encoding="utf-8")
    done = run_cli("--config", str(config), "status", env=cli_env(tmp_path / "data"))
    assert done.returncode == 2 and "publc_url: unknown setting (did you mean public_url?)" in done.stderr
