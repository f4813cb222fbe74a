"""The roles of a PostgreSQL deployment (issue 30) against a real PostgreSQL and a real SMTP server:
the scheduler's cycle queues, workers (threads and real ``digest worker`` processes, one killed with
``kill -9`` mid-send) send each digest once, two schedulers run one cycle, and ``digest web``
replicas serve sign-up, confirm and unsubscribe from the database."""

from __future__ import annotations

import collections
import html as htmllib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import psycopg
import pytest

from digest.clock import utc_now
from digest.cycle.queue import digest_from_record, digest_record, run_worker
from digest.cycle.run import cycle_config, run_once
from digest.mail.mailer import SmtpMailer
from digest.models import Subscriber
from digest.ops import roles
from digest.settings import Settings, load_settings
from digest.signing import Signer
from digest.sources.sample import SampleSource
from digest.state.departures import append_departure, keep_departure, pending_departures
from digest.state.postgres import queue as sql
from digest.state.postgres.store import PostgresStore
from tests.conftest import ROOT, cli_env, run_cli
from tests.postgres_server import PostgresServer, postgres_server, postgres_url, sessions_waiting_on_locks  # noqa: F401
from tests.servers import SmtpSink, free_port, host_ports
from tests.web_support import SECRET, csrf_of, link_in

AS_OF = date(2026, 11, 20)  # a day of the bundled sample
PEOPLE = [f"reader{n:02d}@example.org" for n in range(24)]


def environment(data: Path, url: str, smtp: SmtpSink, **extra: str) -> dict[str, str]:
    return cli_env(data, smtp=smtp, DIGEST_STORE__URL=url, DIGEST_SECRET_KEY=SECRET, **extra)


@pytest.fixture
def env(tmp_path: Path, smtp: SmtpSink, postgres_url: str) -> dict[str, str]:  # noqa: F811
    return environment(tmp_path / "data", postgres_url, smtp)


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        if key.startswith("DIGEST_"):
            monkeypatch.setenv(key, value)
    return load_settings()


def subscribe_all(url: str, people: list[str] = PEOPLE) -> None:
    store = PostgresStore(url)
    store.save_subscribers(Subscriber(email, ("diffusion",)) for email in people)
    store.close()


def queue_cycle(settings: Settings) -> int:
    report = run_once(settings, AS_OF, sources=[SampleSource()], enqueue=True)
    assert report.sent == 0 and not report.errors, report.errors
    store = PostgresStore(settings.store.url)
    try:
        return sql.queued_count(store)
    finally:
        store.close()


def workers(settings: Settings, count: int) -> list[int]:
    """``count`` workers in threads, each with its own connection, until the queue is empty."""
    config, sent, stop = cycle_config(settings), [0] * count, threading.Event()

    def work(number: int) -> None:
        sent[number] = run_worker(config, settings.store.url, SmtpMailer(settings.smtp), utc_now, stop, True)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return sent


def ledger(url: str) -> dict[str, set[str]]:
    store = PostgresStore(url)
    try:
        return {email: store.delivered_ids(email) for email in PEOPLE}
    finally:
        store.close()


def received(smtp: SmtpSink) -> collections.Counter[str]:
    return collections.Counter(m["To"].addresses[0].addr_spec.lower() for m in smtp.messages)


def test_a_digest_survives_the_queue_as_json(settings: Settings) -> None:
    subscribe_all(settings.store.url, PEOPLE[:1])
    queue_cycle(settings)
    store = PostgresStore(settings.store.url)
    with store.transaction():
        job = sql.claim(store)
    assert job is not None and job.email == PEOPLE[0]
    assert job.subscriber is not None, "the person's record comes with the row, read when it is claimed"
    person = Subscriber.from_record(job.subscriber)
    digest, receipt = digest_from_record(job.digest, person, lambda ids: sql.items_by_id(store, ids))
    store.close()
    assert digest.entries and all(e.matches and e.matches[0].highlights for e in digest.entries)
    handled = job.digest.get("handled")  # the person's rhythm mark before and after queueing (hand_back)
    assert digest_record(digest, receipt) == {k: v for k, v in job.digest.items() if k != "handled"}
    assert handled is None or (len(handled) == 2 and handled[1] is not None)


def test_the_scheduler_queues_and_two_workers_send_each_digest_once(settings: Settings, smtp: SmtpSink) -> None:
    subscribe_all(settings.store.url)
    assert queue_cycle(settings) == len(PEOPLE)
    assert smtp.messages == [], "the scheduler sends nothing itself"
    assert queue_cycle(settings) == len(PEOPLE), "the same day again queues nothing twice"

    smtp.delay_after, smtp.delay_seconds = 0, 0.02  # a relay that takes its time: both workers get work
    sent = workers(settings, 2)
    assert sum(sent) == len(PEOPLE) and min(sent) > 0, sent
    assert received(smtp) == {email: 1 for email in PEOPLE}
    delivered = ledger(settings.store.url)
    assert all(delivered[email] for email in PEOPLE)
    store = PostgresStore(settings.store.url)
    assert sql.queued_count(store) == 0
    person = store.subscriber(PEOPLE[0])
    assert person is not None and person.last_delivery_at is not None and person.caught_up_to is not None
    store.close()

    assert queue_cycle(settings) == 0, "delivered papers are never queued again"
    assert workers(settings, 1) == [0] and len(smtp.messages) == len(PEOPLE)


def test_a_worker_leaves_out_who_left_and_what_was_delivered_meanwhile(settings: Settings, smtp: SmtpSink) -> None:
    subscribe_all(settings.store.url, PEOPLE[:3])
    queue_cycle(settings)
    store = PostgresStore(settings.store.url)
    store.remove_subscriber(PEOPLE[0])
    paused = store.subscriber(PEOPLE[1])
    assert paused is not None
    store.save_subscriber(Subscriber(paused.email, paused.rules, active=False))
    store.close()
    assert workers(settings, 1) == [1]
    assert received(smtp) == {PEOPLE[2]: 1}


def test_the_relay_limits_hold_for_all_workers_together(settings: Settings, smtp: SmtpSink) -> None:
    subscribe_all(settings.store.url, PEOPLE[:6])
    queue_cycle(settings)
    limited = settings.model_copy(update={"smtp": settings.smtp.model_copy(update={"max_per_second": 10.0})})
    started = time.monotonic()
    assert sum(workers(limited, 3)) == 6
    assert time.monotonic() - started >= 0.45, "6 emails at 10 a second take half a second, whatever the workers"
    store = PostgresStore(settings.store.url)
    assert sql.take_slot(store, None, None, 6) == (0.0, None)  # counted only with an hour/day limit
    assert sql.take_slot(store, None, None, 1)[1] is not None, "the day's quota is spent"
    store.close()


def test_a_worker_killed_mid_send_loses_nothing_and_doubles_at_most_one(
    env: dict[str, str], settings: Settings, smtp: SmtpSink
) -> None:
    subscribe_all(settings.store.url)
    queue_cycle(settings)
    smtp.delay_after, smtp.delay_seconds = 0, 0.05
    with subprocess.Popen(
        [sys.executable, "-m", "digest", "worker"],
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as worker:
        deadline = time.monotonic() + 60
        while (len(smtp.messages) < 8 or not smtp.delaying) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert smtp.delaying, "the worker is in the middle of an email"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    before = len(smtp.messages)
    assert 8 <= before < len(PEOPLE)
    smtp.delay_after = None
    workers(settings, 2)  # the next workers take the killed one's row too: its transaction was rolled back
    counts = received(smtp)
    assert set(counts) == set(PEOPLE), "nothing lost"
    assert sum(counts.values()) - len(PEOPLE) <= 1, "at most the one email whose reply was lost is doubled"
    delivered = ledger(settings.store.url)
    assert all(delivered[email] for email in PEOPLE)


def niceness(pid: int) -> int:
    """The process's nice value: field 19 of /proc/PID/stat, the 17th after the command's ")"."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_senders_run_at_a_lower_cpu_priority_than_the_web(env: dict[str, str]) -> None:
    """``digest scheduler`` and ``digest worker`` yield the CPU to ``digest web`` on a shared machine."""
    own = niceness(os.getpid())
    port = free_port()
    started = {
        role: subprocess.Popen(
            [sys.executable, "-m", "digest", role],
            env={**env, "PYTHONPATH": str(ROOT), "DIGEST_WEB__HOST": "127.0.0.1", "DIGEST_WEB__PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for role in ("scheduler", "worker", "web")
    }
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        expected = {"scheduler": min(19, own + 10), "worker": min(19, own + 10), "web": own}
        seen = {role: niceness(process.pid) for role, process in started.items()}
        while seen != expected and time.monotonic() < deadline:  # each lowers it first thing after start-up
            time.sleep(0.1)
            seen = {role: niceness(process.pid) for role, process in started.items()}
        assert seen == expected, seen
    finally:
        ended = stop_all(started)
    assert all(code == 0 for code, _ in ended.values()), ended


def stop_all(started: dict[str, subprocess.Popen[bytes]]) -> dict[str, tuple[int, str]]:
    """SIGTERM to each, then every exit code and the end of its stderr, all collected before any
    check, so that one failing role leaves no process running into the next test."""
    for process in started.values():
        process.send_signal(signal.SIGTERM)
    ended = {}
    for role, process in started.items():
        try:
            _, errors = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        ended[role] = (process.returncode, errors.decode()[-2000:])
    return ended


def waiting_on_a_lock(url: str) -> bool:
    """Whether another session of this database waits for a lock."""
    with psycopg.connect(url, autocommit=True) as connection:
        return sessions_waiting_on_locks(connection) > 0


@pytest.mark.parametrize("role", ["scheduler", "serve"])
def test_a_stop_during_start_up_ends_the_process_cleanly(env: dict[str, str], postgres_url: str, role: str) -> None:  # noqa: F811
    """A SIGTERM that arrives while start-up still reads the store (here: behind a table lock) is
    heard: once the read returns the process exits 0, without starting its work. Before, the
    default action killed it (exit -15), which is what a container stop right after a start met."""
    PostgresStore(postgres_url).close()  # the schema exists, so that start-up's read is of the cycles
    port = free_port()
    with psycopg.connect(postgres_url) as holder:
        holder.execute("LOCK TABLE cycles IN ACCESS EXCLUSIVE MODE")
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", role],
            env={**env, "PYTHONPATH": str(ROOT), "DIGEST_WEB__HOST": "127.0.0.1", "DIGEST_WEB__PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not waiting_on_a_lock(postgres_url) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert waiting_on_a_lock(postgres_url), "start-up waits for the cycles table"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, "still waiting for its read: the signal did not kill it"
        holder.rollback()
    _, stderr = process.communicate(timeout=60)
    errors = stderr.decode()[-2000:]
    assert process.returncode == 0, errors
    assert "received SIGTERM" in errors and "stopped before the" in errors, errors
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_two_schedulers_at_once_run_one_cycle(settings: Settings, smtp: SmtpSink) -> None:
    subscribe_all(settings.store.url)
    barrier, reports = threading.Barrier(2), []

    def scheduler() -> None:
        barrier.wait()
        reports.append(roles.queueing_cycle(settings, as_of=AS_OF, sources=[SampleSource()]))

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(r is None for r in reports) == [False, True], "one ran, the other skipped"
    assert roles.queueing_cycle(settings, as_of=AS_OF, sources=[SampleSource()]) is None, "ran since the fire time"
    store = PostgresStore(settings.store.url)
    assert len(store.cycles()) == 1 and sql.queued_count(store) == len(PEOPLE)
    store.close()


def test_roles_refuse_a_tinydb_store_in_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    for role in ("web", "scheduler", "worker"):
        result = run_cli(role, env=env)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"digest: error: `digest {role}` needs store.url = postgresql://…; use digest serve"
        ]


@pytest.fixture
def replicas(tmp_path: Path, smtp: SmtpSink, postgres_url: str) -> Iterator[list[str]]:  # noqa: F811
    """Two ``digest web`` processes on one database, each with its own port and data dir."""
    ports = host_ports(2)  # one call: two calls could pick the same port before either binds
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    processes = []
    for number, port in enumerate(ports):
        env = environment(
            tmp_path / f"data{number}",
            postgres_url,
            smtp,
            DIGEST_PUBLIC_URL=urls[0],
            DIGEST_WEB__HOST="127.0.0.1",
            DIGEST_WEB__PORT=str(port),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "digest", "web"],
                env={**env, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    try:
        for url, process in zip(urls, processes, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                try:
                    if httpx.get(f"{url}/", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "digest web did not start"
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(20) for process in processes]
        errors = [process.communicate()[1].decode() for process in processes]
        assert codes == [0, 0], errors


def test_web_replicas_sign_up_confirm_and_unsubscribe_on_postgresql(
    replicas: list[str],
    smtp: SmtpSink,
    postgres_url: str,  # noqa: F811
) -> None:
    first, second = (httpx.Client(base_url=url, timeout=10, follow_redirects=True) for url in replicas)
    email = "ada@example.org"
    page = first.get("/")
    answer = first.post("/subscribe", data={"csrf": csrf_of(page.text), "email": email, "rules": "diffusion"})
    assert answer.status_code == 200 and "Check your inbox" in answer.text

    link = link_in(smtp.to(email)[-1], "/confirm").replace(replicas[0], replicas[1])  # the other replica
    shown = second.get(link)
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)"', shown.text)
    assert token is not None
    done = second.post("/confirm", data={"csrf": csrf_of(shown.text), "token": htmllib.unescape(token.group(1))})
    assert done.status_code == 200 and "You are subscribed" in done.text
    store = PostgresStore(postgres_url)
    person = store.subscriber(email)
    assert person is not None and person.rules == ("diffusion",) and person.active

    manage = re.search(r'href="(/manage\?token=[^"]+)"', done.text)
    assert manage is not None
    assert first.get(htmllib.unescape(manage.group(1))).status_code == 200, "the first replica sees the change"
    leave = Signer(SECRET).sign("unsubscribe", email)
    one_click = first.post(
        f"/unsubscribe?token={leave}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    assert store.subscriber(email) is None and store.departed_at(email) is not None
    gone = second.get("/unsubscribe", params={"token": leave})
    assert gone.status_code == 200 and "not subscribed" in gone.text
    store.close()
    first.close()
    second.close()


def test_serve_on_postgresql_runs_web_scheduler_and_a_worker_in_one_process(
    env: dict[str, str], settings: Settings, smtp: SmtpSink
) -> None:
    subscribe_all(settings.store.url, PEOPLE[:4])
    queue_cycle(settings)
    port = free_port()
    serve_env = {**env, "DIGEST_WEB__HOST": "127.0.0.1", "DIGEST_WEB__PORT": str(port), "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "digest", "serve"], env=serve_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as service:
        deadline = time.monotonic() + 60
        while len(smtp.messages) < 4 and time.monotonic() < deadline and service.poll() is None:
            time.sleep(0.05)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        service.send_signal(signal.SIGTERM)
        _, errors = service.communicate(timeout=30)
    assert service.returncode == 0, errors.decode()
    assert page.status_code == 200
    assert received(smtp) == {email: 1 for email in PEOPLE[:4]}


def test_a_worker_applies_unsubscribes_kept_on_its_disk_before_it_sends(settings: Settings, smtp: SmtpSink) -> None:
    """A web front on the same disk kept two one-clicks while the database did not answer
    (``unsubscribes.pending``): the worker applies them before its next email, and mails neither."""
    subscribe_all(settings.store.url)
    assert queue_cycle(settings) == len(PEOPLE)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    gone = PEOPLE[:2]
    append_departure(settings.data_dir, gone[0], utc_now())  # the pending file
    keep_departure(settings.data_dir, gone[1], utc_now())  # a web's own file (the database did not answer)
    workers(settings, 1)
    assert set(received(smtp)) == set(PEOPLE) - set(gone)
    assert not pending_departures(settings.data_dir)
    store = PostgresStore(settings.store.url)
    try:
        assert all(store.subscriber(email) is None and store.departed_at(email) is not None for email in gone)
    finally:
        store.close()
