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
from digest.state.postgres.loop_queries import LoopQueries
from digest.state.postgres.store import PostgresStore
from digest.web.app import create_app
from tests.postgres_server import PostgresServer, free_port, postgres_server, postgres_url  # noqa: F401 (fixtures)
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
            before = datetime.now(UTC)
            if way == "backend.leave":
                with store.transaction():
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
                )
            )
        finally:
            queries.close()
            store.close()
    assert outcomes[0] == outcomes[1]
    gone, person, left, at = outcomes[1]
    assert person is None and left == [Y], "the person is gone, nobody else"
    assert gone is subscribed
    assert at == (AT if state == "left already" else "now"), "a replay writes nothing; any other leave is noted now"


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


def test_a_one_click_waiting_for_a_send_holds_up_no_other_request(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """A worker sending to X holds X's row (``FOR UPDATE``) until its email is recorded: X's one-click
    waits for it, on the event loop, while every other page (and other people's one-clicks) answers."""
    site = make_settings(tmp_path / "data", None, store_url=postgres_url)
    seeding = PostgresStore(postgres_url)
    seeding.save_subscribers(Subscriber(email, ("diffusion",)) for email in (X, Y, "cy@example.org"))
    signer = Signer(SECRET)

    def one_click(email: str) -> str:
        return "/unsubscribe?token=" + signer.sign("unsubscribe", email)

    app = create_app(site)
    answers: dict[str, int] = {}
    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            body = {"List-Unsubscribe": "One-Click"}
            with seeding.transaction():  # the worker, mid-send
                seeding.connection.execute("SELECT 1 FROM subscribers WHERE email = %s FOR UPDATE", (X,))
                waiting = threading.Thread(
                    target=lambda: answers.__setitem__("X", httpx.post(base + one_click(X), data=body).status_code)
                )
                waiting.start()
                time.sleep(0.5)
                started = time.monotonic()
                for _ in range(8):  # more requests than the loop's connections: the waiting one holds one
                    assert client.get("/").status_code == 200
                    manage = client.get("/manage?token=" + signer.sign("manage", Y))
                    assert manage.status_code == 200 and "diffusion" in manage.text
                assert client.post(one_click("cy@example.org"), data=body).status_code == 200
                assert time.monotonic() - started < 5, "other requests were held up"
                assert waiting.is_alive() and "X" not in answers, "X's one-click waits for the send"
            waiting.join(20)
    finally:
        app.state.front.keeper.close()
        seeding.close()
    assert answers == {"X": 200}
    store = PostgresStore(postgres_url)
    try:
        assert [s.email for s in store.subscribers()] == [Y]
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
    count = store.connection.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    assert count == (0,), "no connection left open"


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
