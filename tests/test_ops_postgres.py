"""The operator's commands on a PostgreSQL store (issue 30): ``status``, ``preview``, ``try``,
``resume``, ``bounces``, ``doctor``, ``backup`` and ``restore`` run as real processes against a real
PostgreSQL (``tests/postgres_server.py``), a real SMTP sink and, for bounces, a real IMAP server.
Before, each refused a PostgreSQL store with exit 2."""

from __future__ import annotations

import subprocess
import tarfile
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from digest.cycle.run import run_once
from digest.settings import load_settings
from digest.sources.sample import SampleSource
from digest.state.postgres.dump import TABLES
from digest.state.postgres.schema import SCHEMA_VERSION, VERSION_TABLE
from digest.state.postgres.store import PostgresStore
from tests.conftest import cli_env, run_cli
from tests.postgres_server import (  # noqa: F401 (fixtures)
    PostgresServer,
    postgres_server,
    postgres_url,
    url_of_a_role_not_owning_the_tables,
)
from tests.servers import FakeHfApi, SmtpSink, free_port
from tests.test_bounces import PASSWORD, arf, deliver_to_mailbox, dovecot, dsn  # noqa: F401 (fixture)

DAY = "2026-11-20"  # a day of the bundled sample
SECRET = "a test secret key for the operator commands on postgresql"
PEOPLE = ("ada@example.org", "bob@example.org", "cy@example.org")


@pytest.fixture
def env(tmp_path: Path, hf_api: FakeHfApi, smtp: SmtpSink, postgres_url: str) -> dict[str, str]:  # noqa: F811
    return cli_env(tmp_path / "data", hf_api, smtp, DIGEST_STORE__URL=postgres_url, DIGEST_SECRET_KEY=SECRET)


def ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def subscribe_and_run(env: dict[str, str]) -> None:
    for email in PEOPLE:
        ok("subscribe", email, "-k", "diffusion", env=env)
    ok("run", "--date", DAY, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return str(lines[0])


def test_status_try_and_preview_read_the_postgresql_store(
    env: dict[str, str], smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscribe_and_run(env)
    assert len(smtp.messages) == len(PEOPLE)
    status = ok("status", env=env)
    assert "last 1 cycle(s):" in status and "sent 3" in status
    assert "queued for the workers: none" in status

    ok("subscribe", "late@example.org", "-k", "diffusion", env=env)  # a scheduler's cycle queues for them
    for key, value in env.items():
        if key.startswith("DIGEST_"):
            monkeypatch.setenv(key, value)
    report = run_once(load_settings(), date.fromisoformat(DAY), sources=[SampleSource()], enqueue=True)
    assert report.sent == 0 and not report.errors
    assert "queued for the workers: 1 digest(s), the oldest since" in ok("status", env=env)

    tried = ok("try", "diffusion", "--date", DAY, "--days", "3", env=env)
    assert tried.startswith("rule: diffusion") and "\n1. " in tried

    target = Path(env["DIGEST_DATA_DIR"]).parent / "late.html"
    shown = ok("preview", "late@example.org", "--date", DAY, "--out", str(target), env=env)
    assert f"HTML written to {target}" in shown and b"diffusion" in target.read_bytes().lower()
    assert "nothing new for ada@example.org" in ok("preview", "ada@example.org", "--date", DAY, env=env)


@pytest.mark.parametrize("backend", ["tinydb", "postgresql"])
def test_a_preview_of_a_feed_only_subscriber_says_they_get_no_email(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra = {"DIGEST_STORE__URL": request.getfixturevalue("postgres_url")} if backend == "postgresql" else {}
    env = cli_env(tmp_path / "data", DIGEST_SECRET_KEY=SECRET, **extra)
    ok("subscribe", "feed@example.org", "-k", "diffusion", "--feed-only", env=env)
    target = tmp_path / "feed.html"
    shown = ok("preview", "feed@example.org", "--date", DAY, "--out", str(target), env=env)
    assert shown.startswith("feed@example.org gets no email (feed only)")
    assert "digest feed-url feed@example.org" in shown and not target.exists()


def test_bounces_suspend_and_resume_on_postgresql(env: dict[str, str], smtp: SmtpSink, dovecot: int) -> None:  # noqa: F811
    password = Path(env["DIGEST_DATA_DIR"]).parent / "imap_password"
    password.write_text(PASSWORD + "\n")
    env = {
        **env,
        "DIGEST_BOUNCES__ADDRESS": "bounces@digest.example.org",
        "DIGEST_BOUNCES__IMAP_HOST": "127.0.0.1",
        "DIGEST_BOUNCES__IMAP_PORT": str(dovecot),
        "DIGEST_BOUNCES__IMAP_SECURITY": "none",
        "DIGEST_BOUNCES__IMAP_USER": "bounces",
        "DIGEST_BOUNCES__PASSWORD_FILE": str(password),
    }
    subscribe_and_run(env)
    senders = {recipients[0]: sender for sender, recipients in smtp.envelopes}
    deliver_to_mailbox(
        dovecot,
        dsn(senders["ada@example.org"], "ada@example.org", "failed", "5.1.1", "550 5.1.1 user unknown"),
        arf("abuse@digest.example.org", "bob@example.org", senders["bob@example.org"]),
    )
    read = ok("bounces", env=env)
    assert "suspended 1" in read and "unsubscribed 1" in read
    store = PostgresStore(env["DIGEST_STORE__URL"])
    ada = store.subscriber("ada@example.org")
    assert ada is not None and not ada.active
    assert store.subscriber("bob@example.org") is None and store.departed_at("bob@example.org") is not None
    assert "suspended: ada@example.org" in ok("status", env=env)

    assert "resumed ada@example.org" in ok("resume", "ada@example.org", env=env)
    ada = store.subscriber("ada@example.org")
    assert ada is not None and ada.active
    assert "suspended: ada@example.org" not in ok("status", env=env)
    assert run_cli("resume", "nobody@example.org", env=env).returncode == 1
    store.close()


def test_doctor_checks_the_connection_the_schema_and_the_records(env: dict[str, str]) -> None:
    subscribe_and_run(env)
    healthy = ok("doctor", env=env)
    assert f"connected, schema version {SCHEMA_VERSION}" in healthy and "3 subscribers" in healthy
    assert healthy.rstrip().endswith("no problems found")

    with psycopg.connect(env["DIGEST_STORE__URL"], autocommit=True) as connection:
        connection.execute(
            "UPDATE subscribers SET record = jsonb_set(record, '{rules}', '[]') WHERE email = 'ada@example.org'"
        )
        connection.execute(
            "UPDATE subscribers SET record = jsonb_set(record, '{hour}', '25') WHERE email = 'bob@example.org'"
        )
    sick = run_cli("doctor", env=env)
    assert sick.returncode == 1, sick.stderr
    problems = sick.stderr.strip().splitlines()
    assert (
        problems[0]
        == "digest: problem: subscriber ada@example.org has no rules (nothing can match: add one with digest subscribe)"
    )
    assert problems[1] == "digest: problem: subscriber bob@example.org: 'hour' is 25"
    assert problems[2].startswith("digest: error: 2 problem(s) found; correct the rows named in the database")

    repair = one_line_error(run_cli("doctor", "--repair", env=env), 2)
    assert "--repair restores a TinyDB store" in repair

    with psycopg.connect(env["DIGEST_STORE__URL"], autocommit=True) as connection:
        connection.execute(f"UPDATE {VERSION_TABLE} SET version = {SCHEMA_VERSION + 1}")
    newer = run_cli("doctor", env=env)
    assert newer.returncode == 2 and "newer than this digest" in newer.stderr and "upgrade digest" in newer.stderr

    down = {**env, "DIGEST_STORE__URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"}
    line = one_line_error(run_cli("doctor", env=down), 2)
    assert "cannot connect to the PostgreSQL store" in line and "check store.url" in line


def test_doctor_warns_when_digest_s_role_may_not_analyse_the_queue(env: dict[str, str]) -> None:
    """A least-privilege role that does not own the tables: the scheduler's ANALYZE of the queue is
    skipped (with a warning in its log), and doctor says so up front, with the two ways out."""
    subscribe_and_run(env)
    assert "may not analyse" not in ok("doctor", env=env)  # the owner (here a superuser too)

    url = env["DIGEST_STORE__URL"]
    app = {**env, "DIGEST_STORE__URL": url_of_a_role_not_owning_the_tables(url, "app")}
    role = conninfo_to_dict(app["DIGEST_STORE__URL"])["user"]
    report = ok("doctor", env=app)  # a warning, not a problem of the data: exit 0
    assert (
        f"warning: role {role} may not analyse the queue table (its owner is postgres), so the workers' claims"
        f" can read the whole queue after the first cycle: make {role} its owner"
        f" (ALTER TABLE queue OWNER TO {role}), or on PostgreSQL 17+ GRANT MAINTAIN ON queue TO {role}"
    ) in report
    assert report.rstrip().endswith("no problems found")

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"ALTER TABLE queue OWNER TO {role}")
    assert "may not analyse" not in ok("doctor", env=app)


def rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        return {t: int(connection.execute(f"SELECT count(*) FROM {t}".encode()).fetchone()[0]) for t in TABLES}  # type: ignore[index]


def test_backup_and_restore_carry_the_tables_and_the_data_dir_and_resend_nothing(
    env: dict[str, str],
    smtp: SmtpSink,
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    subscribe_and_run(env)
    (Path(env["DIGEST_DATA_DIR"]) / "secret_key").write_text("kept with the backup\n")
    archive = tmp_path / "backup.tar.gz"
    done = ok("backup", str(archive), env=env)
    assert done.startswith("backed up 3 subscribers, ") and str(archive) in done
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as opened:
        assert {f"store.postgresql/{t}.copy" for t in TABLES} <= set(opened.getnames())

    # A new database that a start-up already gave empty tables, and an empty data dir.
    target_url = postgres_server.new_database()
    PostgresStore(target_url).close()
    restored_env = {**env, "DIGEST_STORE__URL": target_url, "DIGEST_DATA_DIR": str(tmp_path / "restored")}
    assert "restored 3 subscribers, " in ok("restore", str(archive), env=restored_env)
    assert rows(target_url) == rows(env["DIGEST_STORE__URL"])
    assert (tmp_path / "restored" / "secret_key").read_text() == "kept with the backup\n"
    store, source = PostgresStore(target_url), PostgresStore(env["DIGEST_STORE__URL"])
    assert store.subscribers() == source.subscribers() and store.cycles() == source.cycles()
    assert store.delivered_ids("ada@example.org") == source.delivered_ids("ada@example.org") != set()
    store.close()
    source.close()
    ok("subscribe", "zed@example.org", "-k", "diffusion", env=restored_env)  # the counters moved past the rows
    sent = len(smtp.messages)
    ok("run", "--date", DAY, env=restored_env)
    assert [m["To"].addresses[0].addr_spec for m in smtp.messages[sent:]] == ["zed@example.org"], "nothing re-sent"

    again = one_line_error(
        run_cli("restore", str(archive), env={**restored_env, "DIGEST_DATA_DIR": str(tmp_path / "x")}), 2
    )
    assert "is not empty (" in again and "nothing was restored" in again


def test_restore_refuses_an_archive_of_the_other_backend_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    subscribe_and_run(env)
    archive = tmp_path / "pg.tar.gz"
    ok("backup", str(archive), env=env)
    tiny = cli_env(tmp_path / "tiny", DIGEST_SECRET_KEY=SECRET)
    line = one_line_error(run_cli("restore", str(archive), env=tiny), 2)
    assert "holds a PostgreSQL store" in line

    ok("subscribe", "ada@example.org", "-k", "diffusion", env=tiny)
    tiny_archive = tmp_path / "tiny.tar.gz"
    ok("backup", str(tiny_archive), env=tiny)
    into_pg = {**env, "DIGEST_DATA_DIR": str(tmp_path / "empty")}
    line = one_line_error(run_cli("restore", str(tiny_archive), env=into_pg), 2)
    assert "holds a TinyDB store" in line and "digest migrate-store" in line


def test_the_backup_holds_every_table_of_the_schema(postgres_url: str) -> None:  # noqa: F811
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as connection:
        found = {row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert found - {VERSION_TABLE} == set(TABLES)
