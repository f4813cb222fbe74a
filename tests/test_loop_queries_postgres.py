"""The web's reads and one-click on the event loop (``digest.state.postgres.loop_queries``), against a
real PostgreSQL: the same answers and changes as the store's own methods, a dropped connection
replaced, no request held up by one that waits for a lock, and a clear error when the server is away.

The web suites' PostgreSQL pass (``pytest --store postgresql``) runs every page through them too.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import StoreError
from digest.models import Subscriber
from digest.signing import Signer
from digest.state.backend import leave
from digest.state.postgres.keeper import PostgresKeeper
from digest.state.postgres.loop_queries import CONNECTIONS, LoopQueries
from digest.state.postgres.store import PostgresStore
from digest.web.app import create_app
from tests.postgres_server import (  # noqa: F401 (fixtures)
    PostgresServer,
    free_port,
    postgres_server,
    postgres_url,
    sessions_waiting_on_locks,
)
from tests.web_support import SECRET, live_server, make_settings

T = TypeVar("T")
X, Y = "ada@example.org", "bob@example.org"
AT = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:  # noqa: F811
    opened = PostgresStore(postgres_url)
    yield opened
    opened.close()


@pytest.fixture
def loop_queries(store: PostgresStore) -> Iterator[LoopQueries]:
    queries = LoopQueries(store.url, prepare=lambda: None)
    yield queries
    queries.close()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


votes_strategy = st.lists(
    st.tuples(st.sampled_from(["2611.00001", "2611.00002", "2611.00003", "x/ü 1"]), st.sampled_from([1, -1])),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(votes=votes_strategy, subscribed=st.booleans())
def test_a_person_and_their_votes_read_as_the_store_reads_them(
    store: PostgresStore, loop_queries: LoopQueries, votes: list[tuple[str, int]], subscribed: bool
) -> None:
    store.connection.execute("DELETE FROM subscribers")
    if subscribed:
        store.save_subscriber(
            Subscriber(X, ("diffusion", "4090"), active=False, layout="compact", hour=7, timezone="Europe/Berlin")
        )
        for n, (paper, vote) in enumerate(votes):
            store.record_vote(X, paper, vote, AT + timedelta(minutes=n % 3))  # ties in time: ordered by paper
    person, votes = run(loop_queries.subscriber_with_votes(X.upper()))
    assert person == store.subscriber(X)
    assert list(votes.items()) == list(store.votes(X).items()), "the same votes, oldest first"
    assert run(loop_queries.subscriber(X)) == person


def count_departure_writes(store: PostgresStore) -> None:
    """A trigger that counts every row written to ``departures`` (an update that changes nothing too)."""
    for statement in (
        "CREATE TABLE departure_writes (email text)",
        "CREATE FUNCTION note_departure_write() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO departure_writes VALUES (NEW.email); RETURN NEW; END $$",
        "CREATE TRIGGER counted AFTER INSERT OR UPDATE ON departures "
        "FOR EACH ROW EXECUTE FUNCTION note_departure_write()",
    ):
        store.connection.execute(statement)


def departure_writes(store: PostgresStore) -> int:
    row = store.connection.execute("SELECT count(*) FROM departure_writes").fetchone()
    assert row is not None
    return int(row[0])


STATES = {
    "subscribed, never left": (True, None),
    "subscribed again after leaving": (True, AT),
    "never subscribed": (False, None),
    "left already": (False, AT),
}


@pytest.mark.parametrize("state", STATES)
def test_the_one_statement_leave_changes_what_the_stores_leave_changes(
    postgres_server: PostgresServer,  # noqa: F811
    state: str,
) -> None:
    subscribed, departed = STATES[state]
    outcomes = []
    for way in ("backend.leave", "one statement"):
        store = PostgresStore(postgres_server.new_database())
        queries = LoopQueries(store.url, prepare=lambda: None)
        try:
            if departed is not None:
                store.forget_departed(X, departed.isoformat())
            if subscribed:
                store.save_subscriber(Subscriber(X, ("diffusion",)))
            store.save_subscriber(Subscriber(Y, ("gpu",)))
            count_departure_writes(store)
            before = datetime.now(UTC)
            if way == "backend.leave":  # as the keeper runs it (PostgresKeeper.write)
                with store.transaction(), store.locking_reads():
                    gone = leave(store, X)
            else:
                gone = run(queries.leave(X))
            at = store.departed_at(X)
            outcomes.append(
                (
                    gone,
                    store.subscriber(X),
                    [s.email for s in store.subscribers()],
                    None if at is None else ("now" if at >= before else at),
                    departure_writes(store),
                )
            )
        finally:
            queries.close()
            store.close()
    assert outcomes[0] == outcomes[1]
    gone, person, left, at, writes = outcomes[1]
    assert person is None and left == [Y], "the person is gone, nobody else"
    assert gone is subscribed
    assert at == (AT if state == "left already" else "now"), "any leave but a replay is noted now"
    assert writes == (0 if state == "left already" else 1), "a replay writes nothing"


@pytest.mark.parametrize("subscribed", [True, False], ids=["subscribed", "never subscribed"])
def test_one_clicks_racing_behind_a_send_remove_once_and_write_one_departure(
    store: PostgresStore, loop_queries: LoopQueries, subscribed: bool
) -> None:
    """A mail provider's one-click and the person's own, both waiting for a send to them: the person
    is removed once, and the departure is written once (a replay writes nothing, also in a race)."""
    store.save_subscribers([Subscriber(X, ("diffusion",)), Subscriber(Y, ("gpu",))])
    if not subscribed:
        store.remove_subscriber(X)
        store.connection.execute("DELETE FROM departures")
    count_departure_writes(store)

    async def three_one_clicks() -> list[bool]:
        return list(await asyncio.gather(*(loop_queries.leave(X) for _ in range(3))))

    sending = PostgresStore(store.url)
    results: list[bool] = []
    try:
        with sending.transaction():  # a worker mid-send holds their row (nothing to hold if they are gone)
            sending.connection.execute("SELECT 1 FROM subscribers WHERE email = %s FOR UPDATE", (X,))
            thread = threading.Thread(target=lambda: results.extend(run(three_one_clicks())))
            thread.start()
            if subscribed:  # they wait for the send to them
                run(until_waiting_on_locks(store, 1))
                assert thread.is_alive()
            else:  # and only then: with nothing to wait for, they end while the send goes on
                thread.join(20)
                assert not thread.is_alive()
        thread.join(20)
    finally:
        sending.close()
    assert sorted(results) == ([False, False, True] if subscribed else [False, False, False])
    assert store.subscriber(X) is None and store.subscriber(Y) is not None
    writes = store.connection.execute("SELECT count(*) FROM departure_writes WHERE email = %s", (X,)).fetchone()
    assert writes == (1,), "one departure written, whoever came second"


def test_a_connection_the_server_dropped_is_replaced_without_an_error(
    store: PostgresStore, loop_queries: LoopQueries
) -> None:
    store.save_subscriber(Subscriber(X, ("diffusion",)))

    async def twice() -> tuple[Subscriber | None, Subscriber | None]:
        first = await loop_queries.subscriber(X)
        store.connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await asyncio.sleep(0.2)
        return first, await loop_queries.subscriber(X)

    first, second = run(twice())
    assert first is not None and first == second
    assert run(loop_queries.leave(X)) is True and store.subscriber(X) is None


def open_connections(store: PostgresStore, *, at_most: int, within: float = 5.0) -> int:
    """The other sessions of this database, once there are ``at_most`` of them or ``within`` seconds
    have passed. A backend leaves ``pg_stat_activity`` a moment after its client closed the connection
    (CI once counted the locker the test had just closed), so a single look would race with that."""
    deadline = time.monotonic() + within
    while True:
        row = store.connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        if int(row[0]) <= at_most or time.monotonic() > deadline:
            return int(row[0])
        time.sleep(0.05)


async def until_waiting_on_locks(store: PostgresStore, count: int, within: float = 20.0) -> None:
    """Until ``count`` sessions wait for a lock: a fixed sleep could end while a loaded machine
    still connects them."""
    deadline = time.monotonic() + within
    while sessions_waiting_on_locks(store.connection) < count:
        assert time.monotonic() < deadline, f"fewer than {count} statements wait behind the lock"
        await asyncio.sleep(0.05)


async def cancel_while_it_waits(store: PostgresStore, statement: Coroutine[Any, Any, Any]) -> None:
    """Start ``statement``, see it wait (behind a lock the test holds), then cancel it."""
    task = asyncio.create_task(statement)
    await until_waiting_on_locks(store, 1)
    assert not task.done(), "it waits behind the lock"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_read_cancelled_in_flight_leaves_no_connection_behind_it(
    store: PostgresStore, loop_queries: LoopQueries
) -> None:
    """A read cancelled while its statement waits (here behind a lock on the whole table): its
    connection is closed, never lent to the next request with a statement still running on it."""
    store.save_subscribers([Subscriber(X, ("diffusion",)), Subscriber(Y, ("gpu",))])
    locker = PostgresStore(store.url)

    async def cancelled_then_more() -> list[Subscriber | None]:
        await cancel_while_it_waits(store, loop_queries.subscriber(X))
        locker.connection.rollback()
        return list(await asyncio.gather(*(loop_queries.subscriber(Y) for _ in range(8))))

    try:
        locker.connection.autocommit = False
        locker.connection.execute("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE")
        results = run(cancelled_then_more())
    finally:
        locker.close()
    assert {r.email if r else None for r in results} == {Y}
    assert open_connections(store, at_most=4) <= 4, "the cancelled statement's connection was closed"


def test_a_one_click_cancelled_while_it_waits_for_a_send_still_unsubscribes(
    store: PostgresStore, loop_queries: LoopQueries
) -> None:
    """A person who asked to leave is never kept: a shutdown that cancels their one-click while it
    waits for a send to them does not undo it."""
    store.save_subscribers([Subscriber(X, ("diffusion",)), Subscriber(Y, ("gpu",))])
    sending = PostgresStore(store.url)

    async def cancelled_one_click() -> None:
        await cancel_while_it_waits(store, loop_queries.leave(X))
        sending.connection.rollback()  # the send ends
        for _ in range(100):
            if await loop_queries.subscriber(X) is None:
                return
            await asyncio.sleep(0.05)

    try:
        sending.connection.autocommit = False
        sending.connection.execute("SELECT 1 FROM subscribers WHERE email = %s FOR UPDATE", (X,))
        run(cancelled_one_click())
    finally:
        sending.close()
    assert store.subscriber(X) is None and store.departed_at(X) is not None
    assert store.subscriber(Y) is not None


@pytest.mark.parametrize("waiting_clicks", [1, 6], ids=["one", "more than the unsubscribes' connections"])
def test_one_clicks_waiting_for_a_send_hold_up_no_page(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    waiting_clicks: int,
) -> None:
    """A worker sending to X holds X's row (``FOR UPDATE``) until its email is recorded: X's one-clicks
    (a provider's, a scanner's, the person's) wait for it on the event loop, while the pages answer,
    and when they take fewer than all the unsubscribes' connections, other people's one-clicks too."""
    site = make_settings(tmp_path / "data", None, store_url=postgres_url)
    seeding = PostgresStore(postgres_url)
    seeding.save_subscribers(Subscriber(email, ("diffusion",)) for email in (X, Y, "cy@example.org"))
    signer = Signer(SECRET)
    body = {"List-Unsubscribe": "One-Click"}

    def one_click(email: str) -> str:
        return "/unsubscribe?token=" + signer.sign("unsubscribe", email)

    app = create_app(site)
    answers: list[int] = []
    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            with seeding.transaction():  # the worker, mid-send
                seeding.connection.execute("SELECT 1 FROM subscribers WHERE email = %s FOR UPDATE", (X,))
                waiting = [
                    threading.Thread(
                        target=lambda: answers.append(httpx.post(base + one_click(X), data=body).status_code)
                    )
                    for _ in range(waiting_clicks)
                ]
                for thread in waiting:
                    thread.start()
                time.sleep(0.5)
                started = time.monotonic()
                for _ in range(8):  # more reads than the reads' connections
                    assert client.get("/").status_code == 200
                    manage = client.get("/manage?token=" + signer.sign("manage", Y))
                    assert manage.status_code == 200 and "diffusion" in manage.text
                    assert client.get("/unsubscribe?token=" + signer.sign("unsubscribe", Y)).status_code == 200
                if waiting_clicks < CONNECTIONS:
                    assert client.post(one_click("cy@example.org"), data=body).status_code == 200
                assert time.monotonic() - started < 5, "other requests were held up"
                assert all(thread.is_alive() for thread in waiting) and not answers, "X's one-clicks wait"
            for thread in waiting:
                thread.join(20)
    finally:
        app.state.front.keeper.close()
        seeding.close()
    assert answers == [200] * waiting_clicks
    store = PostgresStore(postgres_url)
    try:
        expected = [Y] if waiting_clicks < CONNECTIONS else [Y, "cy@example.org"]
        assert sorted(s.email for s in store.subscribers()) == sorted(expected)
    finally:
        store.close()


def test_a_database_that_is_away_is_a_clear_error_without_the_password() -> None:
    queries = LoopQueries(f"postgresql://digest:s3cret@127.0.0.1:{free_port()}/digest", prepare=lambda: None)
    with pytest.raises(StoreError) as raised:
        run(queries.subscriber(X))
    message = str(raised.value)
    assert message.startswith("cannot connect to the PostgreSQL store postgresql://digest:") and "s3cret" not in message


def test_connections_follow_the_event_loop_and_close_without_a_warning(
    store: PostgresStore, loop_queries: LoopQueries
) -> None:
    store.save_subscriber(Subscriber(X, ("diffusion",)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for _ in range(3):  # a new loop each time: the last loop's connections are closed, new ones opened
            assert run(loop_queries.subscriber(X)) is not None
        loop_queries.close()
        gc.collect()
    assert open_connections(store, at_most=0) == 0, "no connection left open"


def test_the_web_keeper_migrates_the_schema_before_its_first_loop_query(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.new_database()  # empty: no tables yet
    keeper = PostgresKeeper(url)
    try:
        assert run(keeper.loop_queries.subscriber_with_votes(X)) == (None, {})
        assert run(keeper.loop_queries.leave(X)) is False
    finally:
        keeper.close()
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT email FROM departures").fetchall() == [(X,)]
