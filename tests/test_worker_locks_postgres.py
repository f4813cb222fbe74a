"""The worker's lock on a person's row, and a person's changes on PostgreSQL, against a real
PostgreSQL and a real SMTP server (from an attacker's review of issue 30):

- a worker that the relay asks to slow down ("421 too many") waits *after* letting go of the
  person's row: their unsubscribe is not kept waiting for the slow-down;
- a manage save that races an unsubscribe (both waiting behind a send in progress) never writes
  the person back: the save reads the row locked, so it sees the unsubscribe;
- the scheduler's queue rows and their progress commit together: no worker can take a row before
  its progress is written (a worker's progress written after it would be overwritten)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from digest.clock import utc_now
from digest.cycle import queue as cycle_queue
from digest.cycle.queue import Worker
from digest.cycle.run import cycle_config
from digest.mail.mailer import SmtpMailer
from digest.settings import Settings
from digest.state.backend import leave
from digest.state.postgres import queue as sql
from digest.state.postgres.keeper import PostgresKeeper
from digest.state.postgres.store import PostgresStore
from digest.web.manage import change_subscription
from tests.postgres_server import postgres_server, postgres_url, until_waiting_on_locks  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_roles_postgres import PEOPLE, env, queue_cycle, settings, subscribe_all  # noqa: F401 (fixtures)

X = PEOPLE[0]

# The web's one-click runs the one statement on the event loop (digest.state.postgres.loop_queries);
# a keeper's write of backend.leave is the same change in a transaction of several statements.
LEAVES: dict[str, Callable[[PostgresKeeper, str], bool]] = {
    "transaction": lambda keeper, email: keeper.write(lambda store: leave(store, email)),
    "one statement": lambda keeper, email: asyncio.run(keeper.loop_queries.leave(email)),
}


@pytest.mark.parametrize("way", LEAVES)
def test_a_throttled_worker_waits_after_letting_go_of_the_persons_row(
    settings: Settings,  # noqa: F811
    smtp: SmtpSink,
    way: str,
) -> None:
    subscribe_all(settings.store.url, [X])
    assert queue_cycle(settings) == 1
    smtp.data_replies = ["421 4.7.0 too many messages, slow down"]
    stop = threading.Event()
    worker = Worker(cycle_config(settings), settings.store.url, SmtpMailer(settings.smtp), utc_now, stop)
    worker.throttle.initial = worker.throttle.max_delay = 8.0  # a slow-down of 4–8 s
    keeper = PostgresKeeper(settings.store.url)
    try:
        with worker.mailer:
            started = time.monotonic()
            wait = worker.once()
            assert wait is not None and wait >= 4.0, "the slow-down is handed back to be waited"
            assert time.monotonic() - started < 4.0, "not waited inside the transaction"
            began = time.monotonic()
            assert LEAVES[way](keeper, X) is True
            assert time.monotonic() - began < 2.0, "the unsubscribe did not wait for the slow-down"
            assert worker.once() == 0.0, "their row is dropped: they left"
            assert worker.once() is None, "nothing left to send"
    finally:
        keeper.close()
        worker.close()
    assert smtp.to(X) == []


@pytest.mark.parametrize("way", LEAVES)
def test_a_manage_save_racing_an_unsubscribe_behind_a_send_never_writes_the_person_back(
    settings: Settings,  # noqa: F811
    way: str,
) -> None:
    subscribe_all(settings.store.url, [X])
    assert queue_cycle(settings) == 1
    keeper = PostgresKeeper(settings.store.url)
    sending = PostgresStore(settings.store.url)
    results: dict[str, Any] = {}

    def change(name: str, fn: Callable[[], Any], waiting: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.__setitem__(name, fn()))
        thread.start()
        until_waiting_on_locks(settings.store.url, waiting)  # behind the send's lock, in this order
        return thread

    try:
        with sending.transaction():  # a worker sending to X holds their row
            job = sql.claim(sending)
            assert job is not None and job.subscriber is not None
            unsubscribing = change("leave", lambda: LEAVES[way](keeper, X), 1)
            saving = change(
                "save", lambda: keeper.write(lambda store: change_subscription(store, X, "save", ("gpu",), None)), 2
            )
            assert unsubscribing.is_alive() and saving.is_alive()
            sql.finish(sending, job.id)
        unsubscribing.join(10)
        saving.join(10)
        assert results == {"leave": True, "save": False}, results
        assert sending.subscriber(X) is None, "the person who left is not written back by the save"
    finally:
        keeper.close()
        sending.close()


@pytest.mark.parametrize("way", LEAVES)
def test_changes_that_wait_for_a_send_succeed_on_a_server_that_defaults_to_repeatable_read(
    settings: Settings,  # noqa: F811
    way: str,
) -> None:
    """Every connection digest opens reads committed rows whatever the server's default: under
    repeatable read, an unsubscribe or a save that waited for a send would fail on the row the
    send changed (a 500, and a person who asked to leave still subscribed)."""
    url, Y = settings.store.url, PEOPLE[1]
    subscribe_all(url, [X, Y])
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_isolation = 'repeatable read'")
    keeper = PostgresKeeper(url)
    sending = psycopg.connect(url)  # a send as any client makes it, under the server's default
    results: dict[str, Any] = {}
    changes: dict[str, Callable[[], Any]] = {
        "leave": lambda: LEAVES[way](keeper, X),
        "save": lambda: keeper.write(lambda store: change_subscription(store, Y, "save", ("gpu",), None)),
    }
    threads = [threading.Thread(target=lambda n=name: results.__setitem__(n, changes[n]())) for name in changes]
    try:
        assert sending.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        sending.execute("SELECT 1 FROM subscribers WHERE email = ANY(%s) FOR UPDATE", ([X, Y],))
        for thread in threads:
            thread.start()
        until_waiting_on_locks(url, 2)  # both wait for the send
        assert all(thread.is_alive() for thread in threads)
        sending.execute("UPDATE subscribers SET record = record || '{}'::jsonb WHERE email = ANY(%s)", ([X, Y],))
        sending.commit()  # the send's progress is recorded
        for thread in threads:
            thread.join(10)
        assert results == {"leave": True, "save": True}, results
        store = PostgresStore(url)
        try:
            saved = store.subscriber(Y)
            assert store.subscriber(X) is None and saved is not None and saved.rules == ("gpu",)
        finally:
            store.close()
    finally:
        keeper.close()
        sending.close()


def test_no_worker_takes_a_queued_row_before_its_progress_is_written(
    settings: Settings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscribe_all(settings.store.url, PEOPLE[:3])
    taken: list[object] = []
    real_enqueue = sql.enqueue

    def enqueue_then_look(store: PostgresStore, rows: Any) -> int:
        queued = real_enqueue(store, rows)
        other = PostgresStore(settings.store.url)  # a worker, looking for work right now
        try:
            with other.transaction():
                taken.append(sql.claim(other))
        finally:
            other.close()
        return queued

    monkeypatch.setattr(cycle_queue.sql, "enqueue", enqueue_then_look)
    assert queue_cycle(settings) == 3
    assert taken == [None], "the rows are not visible to workers until their progress is committed with them"
    store = PostgresStore(settings.store.url)
    try:
        assert all(s.handled_at is not None for s in store.subscribers())
    finally:
        store.close()
