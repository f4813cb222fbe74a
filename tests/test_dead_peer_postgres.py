"""A PostgreSQL server gone without a word: its packets dropped, no reset ever coming (a host
powered off, a network cut). A connection to it fails within the bounds of
:data:`digest.state.postgres.store.KEEPALIVES`, both while it waits for an answer (TCP keepalives)
and when it sends a statement (``tcp_user_timeout``), instead of holding its worker or thread until
the kernel gives up: about 15 minutes for a send, for ever for a wait.

The bounds here are the URL's (its values win over digest's own), so that the test takes seconds
instead of digest's one minute; with them off, the same connection is still waiting well past
them, which is what the bounds are for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from digest.errors import StoreError
from digest.models import Subscriber
from digest.state.postgres.store import PostgresStore
from tests.blackhole import blackholed, require_iptables
from tests.postgres_server import postgres_server, postgres_url, until_waiting_on_locks  # noqa: F401 (fixtures)
from tests.tcp_proxy import FreezableProxy

X = "ada@example.org"
# Keepalive probes after 1 s idle, each second, dead after 2 unanswered; a sent packet may go
# unacknowledged for 2 s.
BOUNDED = "keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=2000"
UNBOUNDED = "keepalives=0&tcp_user_timeout=0"
NOTICED_WITHIN = 20.0  # the bounds above add up to about 3 s: room for a loaded machine
STILL_WAITING_AFTER = 8.0  # past those bounds, well before the kernel's own (15 minutes)


@pytest.fixture(autouse=True)
def _iptables() -> None:
    require_iptables()


def started(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # what the test looks at
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def assert_failed_as_the_stores(outcome: dict[str, Any]) -> None:
    error = outcome.get("error")
    assert isinstance(error, (psycopg.OperationalError, StoreError)), outcome


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded"])
def test_a_server_gone_while_a_statement_waits_for_its_answer(postgres_url: str, bounded: bool) -> None:  # noqa: F811
    PostgresStore(postgres_url).close()  # the schema, made on a direct connection
    proxy, through = FreezableProxy.before(postgres_url)
    store = PostgresStore(f"{through}?{BOUNDED if bounded else UNBOUNDED}")
    thread: threading.Thread | None = None
    holder = psycopg.connect(postgres_url)
    try:
        holder.execute("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE")
        thread, outcome = started(lambda: store.subscriber(X))
        until_waiting_on_locks(postgres_url)
        with blackholed(proxy.port):
            holder.rollback()  # the answer goes out now, and is dropped on the way
            if bounded:
                started_at = time.monotonic()
                thread.join(NOTICED_WITHIN)
                assert not thread.is_alive(), "still waiting for a server that is gone"
                assert_failed_as_the_stores(outcome)
                assert time.monotonic() - started_at < NOTICED_WITHIN
            else:
                thread.join(STILL_WAITING_AFTER)
                assert thread.is_alive(), "without keepalives, only the answer would end the wait"
        thread.join(60)  # packets flow again: the late answer arrives
        assert bounded or outcome == {"value": None}, outcome
    finally:
        holder.close()
        proxy.stop()
        if thread is not None:
            thread.join(10)
        store.close()


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded"])
def test_a_statement_sent_to_a_server_that_is_gone(postgres_url: str, bounded: bool) -> None:  # noqa: F811
    PostgresStore(postgres_url).close()
    proxy, through = FreezableProxy.before(postgres_url)
    store = PostgresStore(f"{through}?{BOUNDED if bounded else UNBOUNDED}")
    thread: threading.Thread | None = None
    try:
        with blackholed(proxy.port):
            thread, outcome = started(lambda: store.save_subscribers([Subscriber(X, ("gpu",))]))
            if bounded:
                thread.join(NOTICED_WITHIN)
                assert not thread.is_alive(), "still sending to a server that is gone"
                assert_failed_as_the_stores(outcome)
                assert "the PostgreSQL store" in str(outcome["error"]), "a clear error, naming the store"
            else:
                thread.join(STILL_WAITING_AFTER)
                assert thread.is_alive(), "without a user timeout, the kernel retries for 15 minutes"
        thread.join(60)  # packets flow again: the statement gets through, late
        if not bounded:
            assert outcome == {"value": None}, outcome
            with psycopg.connect(postgres_url) as direct:
                assert direct.execute("SELECT count(*) FROM subscribers").fetchone() == (1,)
    finally:
        proxy.stop()
        if thread is not None:
            thread.join(10)
        store.close()


def test_digests_own_bound_ends_a_send_to_a_server_that_is_gone_within_about_a_minute(postgres_url: str) -> None:  # noqa: F811
    """The same with nothing in the URL: digest's own ``tcp_user_timeout`` of 60 s ends it (a
    worker's statement, a page's save), where the kernel alone would retry for 15 minutes."""
    PostgresStore(postgres_url).close()
    proxy, through = FreezableProxy.before(postgres_url)
    store = PostgresStore(through)
    thread: threading.Thread | None = None
    try:
        with blackholed(proxy.port):
            began = time.monotonic()
            thread, outcome = started(lambda: store.save_subscribers([Subscriber(X, ("gpu",))]))
            thread.join(120)
            took = time.monotonic() - began
            assert not thread.is_alive(), "still sending after 2 minutes"
        assert_failed_as_the_stores(outcome)
        assert 50 < took < 120, f"ended after {took:.0f} s, not by the 60 s bound"
    finally:
        proxy.stop()
        if thread is not None:
            thread.join(10)
        store.close()
