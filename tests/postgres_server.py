"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` into a temp dir, as an unprivileged user.

PostgreSQL refuses to run as root, and the tests (and CI, on a fresh Debian machine) run as root:
the server's directory is then handed to ``nobody`` (or to a system user created for it when there
is no ``nobody``) and the binaries are run through ``runuser``. It listens on 127.0.0.1 at a free
port and on a unix socket in its own directory, with ``fsync`` off (the tests crash digest, never
the server), and is stopped and removed at the end of the session.

Without the binaries (Debian's ``postgresql`` package) the tests that need it are skipped, saying
so; with ``POSTGRES_TESTS=required`` (CI) they fail instead.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port  # below the ephemeral range: see host_ports

FALLBACK_USER = "digest-pg"
START_ATTEMPTS = 3


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (``/usr/lib/postgresql/N/bin``), or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def unprivileged_user() -> str:
    """``nobody``, or a system user made for the server if this machine has none."""
    for name in ("nobody", FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return FALLBACK_USER


class PostgresServer:
    """One throw-away cluster; :meth:`new_database` gives each test an empty database of its own."""

    def __init__(self, bin_dir: Path, settings: tuple[str, ...] = ()) -> None:
        self.bin_dir = bin_dir
        self.settings = settings  # more ``name=value`` server settings (the bench's --pg-stats)
        self.root = Path(tempfile.mkdtemp(prefix="digest-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.user: str | None = None
        self._numbers = itertools.count(1)
        if os.geteuid() == 0:
            self.user = unprivileged_user()
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PostgresServer:
        initdb = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
        for _ in range(START_ATTEMPTS):  # a port taken between the probe and the bind: try another
            self.port = free_port()
            options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=50"
            options += "".join(f" -c {setting}" for setting in self.settings)
            started = self._run(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
            )
            if started.returncode == 0:
                return self
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """An empty database, named ``t<N>``; its URL."""
        import psycopg

        name = f"t{next(self._numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def server_or_skip() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql package"
        if os.environ.get("POSTGRES_TESTS") == "required":
            pytest.fail(f"POSTGRES_TESTS=required but {reason}")
        pytest.skip(reason)
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started on first use)."""
    yield from server_or_skip()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty database for this test alone."""
    return postgres_server.new_database()


def url_of_a_role_not_owning_the_tables(url: str, prefix: str) -> str:
    """``url`` as a new login role that may read and write digest's tables but owns none of them
    (named after the database: roles are the cluster's, shared by every test of a run)."""
    import psycopg

    role = f"{prefix}_{url.rsplit('/', 1)[1]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        connection.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    return url.replace("postgres@", f"{role}@", 1)


def sessions_waiting_on_locks(connection: Any) -> int:
    """How many other sessions of this database wait for a lock right now (``connection``: a
    psycopg connection to it)."""
    row = connection.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0]) if row else 0


def until_waiting_on_locks(url: str, count: int = 1, within: float = 20.0) -> None:
    """Until ``count`` other sessions of the database at ``url`` wait for a lock: a fixed sleep
    could end while a loaded machine still connects them (and let a later change go first)."""
    import psycopg

    deadline = time.monotonic() + within
    with psycopg.connect(url, autocommit=True) as connection:
        while sessions_waiting_on_locks(connection) < count:
            assert time.monotonic() < deadline, f"fewer than {count} sessions wait for a lock"
            time.sleep(0.05)
