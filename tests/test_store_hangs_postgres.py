"""A PostgreSQL server that hangs without answering (its host stops mid-conversation: no reset, no
close), between the web and a real PostgreSQL (:class:`tests.tcp_proxy.FreezableProxy`): every
request that needs the database answers "try again" (503) within the keeper's bound, the pages that
do not need it answer at once, an unsubscribe asked for meanwhile is carried out when the server
answers again, and then everything works as before. And every connection keeps TCP alive, so one
to a host that is gone for good fails instead of waiting for ever."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from digest.errors import StoreUnavailableError
from digest.models import Subscriber
from digest.paths import KEPT_DIR
from digest.settings import Settings, redacted, scrubbed
from digest.signing import Signer
from digest.state.departures import keep_departure, parse, pending_departures
from digest.state.postgres import keeper as postgres_keeper
from digest.state.postgres.loop_queries import LoopQueries
from digest.state.postgres.store import PostgresStore, connect
from digest.web import front as front_module
from digest.web.app import create_app
from digest.web.front import Front
from tests.conftest import ROOT, cli_env
from tests.postgres_server import PostgresServer, free_port, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.tcp_proxy import FreezableProxy
from tests.web_support import SECRET, csrf_of, live_server, make_settings

X, Y = "ada@example.org", "bob@example.org"
BOUND = 1.5  # the keeper's answer bound in these tests (15 s in a deployment)
SIGNER = Signer(SECRET)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[FreezableProxy, str]]:  # noqa: F811
    seeding = PostgresStore(postgres_url)
    seeding.save_subscribers(Subscriber(email, ("diffusion",)) for email in (X, Y))
    seeding.close()
    proxy, url = FreezableProxy.before(postgres_url)
    yield proxy, url
    proxy.stop()


@dataclass
class Site:
    """A web front (``create_app``) whose database is behind ``proxy``; ``url`` reaches it directly."""

    proxy: FreezableProxy
    url: str
    settings: Settings
    app: Starlette

    @property
    def front(self) -> Front:
        front: Front = self.app.state.front
        return front

    @contextmanager
    def serving(self, lifespan: str = "off") -> Iterator[httpx.Client]:
        with live_server(self.app, lifespan=lifespan) as base, httpx.Client(base_url=base, timeout=60) as client:
            yield client


@pytest.fixture
def site(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    proxied: tuple[FreezableProxy, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Site]]:
    """A :class:`Site` whose keeper waits ``answer_seconds`` (default :data:`BOUND`) and whose
    drain tries every 0.2 s; its proxy thawed and its keeper closed at the end."""
    proxy, url = proxied
    made: list[Site] = []

    def make(answer_seconds: float = BOUND) -> Site:
        monkeypatch.setattr(postgres_keeper, "ANSWER_SECONDS", answer_seconds)
        monkeypatch.setattr(front_module, "DRAIN_SECONDS", 0.2)
        settings = make_settings(tmp_path / "data", None, store_url=url)
        made.append(Site(proxy, postgres_url, settings, create_app(settings)))
        return made[-1]

    yield make
    proxy.thaw()  # a keeper closing waits for the calls still waiting on the server
    for each in made:
        each.front.keeper.close()


def unsubscribe(client: httpx.Client, email: str) -> httpx.Response:
    """The one-click (RFC 8058) a mail client sends."""
    return client.post("/unsubscribe?token=" + SIGNER.sign("unsubscribe", email), data=ONE_CLICK)


def manage(client: httpx.Client, email: str) -> httpx.Response:
    return client.get("/manage?token=" + SIGNER.sign("manage", email))


def kept(data_dir: Path) -> list[str]:
    """The addresses of the unsubscribes kept on disk (``unsubscribes.kept``), in no order."""
    folder = data_dir / KEPT_DIR
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return sorted(email for path in files for email, _ in parse(path.read_bytes()))


def wait_until_applied(data_dir: Path) -> None:
    """Until the unsubscribes kept in ``data_dir`` are applied (the file goes), or 20 s."""
    deadline = time.monotonic() + 20
    while pending_departures(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_until_gone(url: str, email: str) -> None:
    deadline = time.monotonic() + 20
    while email in subscribed(url) and time.monotonic() < deadline:
        time.sleep(0.1)


def subscribed(url: str) -> list[str]:
    store = PostgresStore(url)
    try:
        return sorted(s.email for s in store.subscribers())
    finally:
        store.close()


def test_a_database_that_hangs_gets_try_again_pages_within_the_bound_and_loses_no_unsubscribe(
    site: Callable[..., Site],
) -> None:
    web = site()
    with web.serving() as client:
        page = manage(client, X)  # connections opened, schema checked: all through the proxy
        assert page.status_code == 200 and "diffusion" in page.text
        save = {"csrf": csrf_of(page.text), "token": SIGNER.sign("manage", X), "action": "pause"}
        web.proxy.freeze()
        answers: dict[str, tuple[int, float, httpx.Response]] = {}

        def ask(name: str, method: str, path: str, **kwargs: object) -> None:
            started = time.monotonic()
            with httpx.Client(base_url=client.base_url, timeout=30, cookies=client.cookies) as own:
                response = own.request(method, path, **kwargs)  # type: ignore[arg-type]
            answers[name] = (response.status_code, time.monotonic() - started, response)

        asked = [
            ("manage page", "GET", "/manage?token=" + SIGNER.sign("manage", X), {}),
            ("manage save", "POST", "/manage", {"data": save}),
            ("one-click", "POST", "/unsubscribe?token=" + SIGNER.sign("unsubscribe", X), {"data": ONE_CLICK}),
            ("unsubscribe page", "GET", "/unsubscribe?token=" + SIGNER.sign("unsubscribe", Y), {}),
            ("health", "GET", "/healthz", {}),
        ]
        threads = [threading.Thread(target=ask, args=(n, m, p), kwargs=k) for n, m, p, k in asked]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        home = client.get("/")  # needs no database: answers while the others wait
        assert home.status_code == 200 and time.monotonic() - started < 3.0
        for thread in threads:
            thread.join(30)
        clicked = answers.pop("one-click")
        assert clicked[0] == 200 and clicked[1] < BOUND + 6, "never refused: kept on disk at the bound"
        assert kept(web.settings.data_dir) == [X]
        for name, (status, took, response) in answers.items():
            assert status == 503, (name, status, response.text[:300])
            assert took < BOUND + 6, (name, took)
            if name == "health":
                assert response.json()["status"] == "error"
            else:
                assert "Please try again in a minute" in response.text and "Traceback" not in response.text
                assert response.headers["retry-after"] == "60"
        assert len(answers) == len(asked) - 1
        assert subscribed(web.url) == [X, Y], "nothing was done while the server hung"

        web.proxy.thaw()
        wait_until_gone(web.url, X)
        assert subscribed(web.url) == [Y], "the one-click asked for during the hang is carried out"
        wait_until_applied(web.settings.data_dir)
        assert not pending_departures(web.settings.data_dir), "the copy kept on disk is applied, then removed"
        assert unsubscribe(client, X).status_code == 200
        page = manage(client, Y)
        assert page.status_code == 200 and "diffusion" in page.text, "the web works again"
        assert client.get("/healthz").json()["status"] != "error"


def test_many_requests_during_a_hang_all_answer_and_none_holds_up_the_rest(site: Callable[..., Site]) -> None:
    """More requests than the web has connections and threads for, at once, while the server
    hangs: each answers 503 within about the bound (they do not queue behind each other's waits)."""
    web = site()
    took: list[tuple[int, float]] = []
    with web.serving() as client:
        assert manage(client, Y).status_code == 200
        web.proxy.freeze()

        def ask(n: int) -> None:
            started = time.monotonic()
            token = SIGNER.sign("manage", f"p{n}@example.org")
            status = httpx.get(f"{client.base_url}/manage?token={token}", timeout=30).status_code
            took.append((status, time.monotonic() - started))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(took) == 24 and all(status == 503 for status, _ in took), took
    assert max(seconds for _, seconds in took) < BOUND + 6, took


def test_every_connection_keeps_tcp_alive_and_the_urls_own_values_win(postgres_url: str) -> None:  # noqa: F811
    PostgresStore(postgres_url).close()  # the schema
    connection = connect(postgres_url)
    try:
        parameters = connection.info.get_parameters()
        assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == "30"
        assert parameters["tcp_user_timeout"] == "60000"
    finally:
        connection.close()
    own = connect(postgres_url + "?keepalives_idle=7")
    try:
        assert own.info.get_parameters()["keepalives_idle"] == "7"
    finally:
        own.close()

    async def loop_parameters() -> dict[str, str]:
        queries = LoopQueries(postgres_url, prepare=lambda: None)
        try:
            await queries.subscriber(X)
            return queries._all[0].info.get_parameters()
        finally:
            queries.close()

    assert asyncio.run(loop_parameters())["keepalives_idle"] == "30"


def test_a_one_click_while_the_database_is_away_is_kept_and_applied_when_it_is_back(
    site: Callable[..., Site],
) -> None:
    """The server refuses connections (down, restarting): the one-click still answers 200, the
    departure waits on disk, and the web applies it once the server is back, without a restart."""
    web = site()
    with web.serving() as client:
        assert manage(client, Y).status_code == 200
        web.proxy.refuse()  # ends the web's open connections, and refuses new ones
        clicked = unsubscribe(client, X)
        assert clicked.status_code == 200 and "unsubscribed" in clicked.text.lower()
        assert kept(web.settings.data_dir) == [X]
        time.sleep(1.0)  # the drain tries, and waits
        assert subscribed(web.url) == [X, Y] and pending_departures(web.settings.data_dir)
        web.proxy.accept()
        wait_until_applied(web.settings.data_dir)
        assert subscribed(web.url) == [Y] and not pending_departures(web.settings.data_dir)
        store = PostgresStore(web.url)
        try:
            assert store.departed_at(X) is not None
        finally:
            store.close()


def test_unsubscribes_kept_on_disk_before_a_restart_are_applied_at_start(site: Callable[..., Site]) -> None:
    """A web replica stopped while a departure waited on its disk (the database did not answer):
    started again, it applies it without waiting for another one-click."""
    web = site()
    web.settings.data_dir.mkdir(parents=True)
    keep_departure(web.settings.data_dir, X, datetime.now(UTC))
    with web.serving(lifespan="on"):
        wait_until_applied(web.settings.data_dir)
        assert not pending_departures(web.settings.data_dir) and subscribed(web.url) == [Y]


def test_a_one_click_to_a_web_that_started_while_the_database_was_down_is_kept(site: Callable[..., Site]) -> None:
    """The web's first contact with the database (its schema check) fails: the one-click is
    still kept and applied once the server is up, by the same process."""
    web = site()
    web.proxy.refuse()
    with web.serving(lifespan="on") as client:
        assert unsubscribe(client, X).status_code == 200 and kept(web.settings.data_dir) == [X]
        assert manage(client, Y).status_code == 503
        web.proxy.accept()
        wait_until_applied(web.settings.data_dir)
        assert subscribed(web.url) == [Y]
        assert manage(client, Y).status_code == 200


def test_a_one_click_while_the_drain_is_stuck_on_the_hung_database_is_still_kept_at_once(
    site: Callable[..., Site],
) -> None:
    """The first one-click during a hang is kept, and the drain then waits inside its fold for the
    server; a second one-click must not wait for the drain (it waited for the drain's file lock,
    with no bound, before each kept unsubscribe became a file of its own)."""
    web = site()
    with web.serving() as client:
        assert manage(client, Y).status_code == 200
        web.proxy.freeze()
        assert unsubscribe(client, X).status_code == 200
        time.sleep(1.0)  # the drain has taken X's file and waits for the server
        started = time.monotonic()
        assert unsubscribe(client, Y).status_code == 200 and time.monotonic() - started < BOUND + 6
        assert kept(web.settings.data_dir) == [X, Y]
        web.proxy.thaw()
        wait_until_applied(web.settings.data_dir)
        assert subscribed(web.url) == [] and kept(web.settings.data_dir) == []


def test_a_steady_flood_during_a_hang_starves_no_static_file_and_no_unsubscribe(site: Callable[..., Site]) -> None:
    """Sixty clients asking /metrics (loopback: allowed) again and again while the server hangs: a
    call the server never answers keeps its thread, so the store's calls take at most a few threads
    at a time and a static file and a one-click answer throughout. With only the wait for a
    connection bounded, the static file took 7-8 s each time here, longer under a longer flood;
    with nothing bounded, it got no answer. (It flooded /healthz until /healthz requests began to
    share one read.)"""
    web = site(answer_seconds=5.0)  # long enough for waiting threads to pile up
    flooding = threading.Event()
    flooding.set()

    def flood(base: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as own:
            while flooding.is_set():
                own.get("/metrics")

    with web.serving() as client:
        assert manage(client, Y).status_code == 200
        web.proxy.freeze()
        clients = [threading.Thread(target=flood, args=(str(client.base_url),)) for _ in range(60)]
        for thread in clients:
            thread.start()
        try:
            took = []
            for _ in range(5):
                time.sleep(2.0)
                started = time.monotonic()
                assert client.get("/static/site.css").status_code == 200
                took.append(time.monotonic() - started)
            started = time.monotonic()
            assert unsubscribe(client, X).status_code == 200 and time.monotonic() - started < 5.0 + 6
        finally:
            flooding.clear()
            web.proxy.thaw()
            for thread in clients:
                thread.join(60)
        assert max(took) < 3.0, took
        wait_until_gone(web.url, X)
        assert subscribed(web.url) == [Y]


def test_a_change_that_commits_after_its_request_gave_up_is_undone(site: Callable[..., Site]) -> None:
    """A sign-up's mail claim that the database commits after the person was told "try again" is
    taken back (``Front.write``'s ``undo``): their retry within the hour is mailed."""
    front = site(answer_seconds=0.5).front
    undone, refused = threading.Event(), threading.Event()

    def slow_claim(store: Any) -> bool:
        store.connection.execute("SELECT pg_sleep(1.5)")
        return True

    def fails(store: Any) -> bool:
        store.connection.execute("SELECT pg_sleep(1.0)")
        raise RuntimeError("not made")

    async def write_then_wait() -> None:
        with pytest.raises(StoreUnavailableError):
            await front.write(slow_claim, undo=lambda store: undone.set())
        assert not undone.is_set(), "not before the change is made"

    async def refused_write() -> None:
        with pytest.raises(StoreUnavailableError):
            await front.write(fails, undo=lambda store: refused.set())

    asyncio.run(write_then_wait())
    assert undone.wait(10), "undone once the change was made"
    asyncio.run(refused_write())
    time.sleep(1.5)
    assert not refused.is_set(), "a change that failed is not undone"


def test_a_change_still_queued_when_its_request_gave_up_is_dropped(site: Callable[..., Site]) -> None:
    """Past the bound, a change not yet started is never made (a stale "pause" must not land after
    a later "resume"); the keeper's writers were all busy with slow changes."""
    front = site(answer_seconds=0.5).front
    made = threading.Event()

    def slow(store: Any) -> None:
        store.connection.execute("SELECT pg_sleep(2)")

    async def writes() -> None:
        busy = [asyncio.ensure_future(front.write(slow)) for _ in range(postgres_keeper.CONNECTIONS)]
        await asyncio.sleep(0.1)
        with pytest.raises(StoreUnavailableError):
            await front.write(lambda store: made.set())
        for task in busy:
            with pytest.raises(StoreUnavailableError):
                await task

    asyncio.run(writes())
    time.sleep(3)
    assert not made.is_set()


@pytest.mark.parametrize(
    "url, secret",
    [
        ("postgresql://digest:s3cr%et@127.0.0.1:{port}/digest", "s3cr%et"),  # not valid percent-encoding
        ("postgresql://digest:p%40ss@127.0.0.1:{port}/digest", "p@ss"),
        ("postgresql://digest@127.0.0.1:{port}/digest?password=hunter2&sslmode=disable", "hunter2"),
        ("postgresql://digest:a/b?c#dd@127.0.0.1:{port}/digest", "a/b?c#dd"),  # not encoded at all
        ("postgresql://digest@127.0.0.1:{port}/digest?sslpassword=k3yp4ss&%70assword=hunter3", "k3yp4ss"),
    ],
)
def test_a_connection_error_never_shows_the_password(url: str, secret: str) -> None:
    """What the driver says about a URL it cannot use (it may echo the URL back) and the URL as
    digest names it, for every way a password can be written in ``store.url``."""
    url = url.format(port=free_port())
    with pytest.raises(StoreUnavailableError) as raised:
        connect(url)
    assert secret not in str(raised.value) and secret.split("%")[0] not in str(raised.value)
    assert secret not in redacted(url) and "***" in redacted(url)
    assert scrubbed(f'invalid token: "{secret}"', url) == 'invalid token: "***"'


def test_digest_web_stops_on_sigterm_while_the_database_hangs(
    tmp_path: Path,
    proxied: tuple[FreezableProxy, str],
) -> None:
    """``digest web`` (a real process, the deployment's 15 s bound) told to stop while a request
    waits for a hung database: the request still gets its answer, and the process exits 0 without
    closing the connections under it."""
    proxy, url = proxied
    port = free_port()
    env = cli_env(tmp_path / "data", DIGEST_STORE__URL=url, DIGEST_SECRET_KEY=SECRET)
    env |= {"PYTHONPATH": str(ROOT), "DIGEST_WEB__HOST": "127.0.0.1", "DIGEST_WEB__PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "web"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    answers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/manage?token=" + SIGNER.sign("manage", Y), timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        proxy.freeze()
        waiting = threading.Thread(
            target=lambda: answers.append(
                httpx.get(base + "/manage?token=" + SIGNER.sign("manage", X), timeout=60).status_code
            )
        )
        waiting.start()
        time.sleep(1.0)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        waiting.join(30)
    finally:
        proxy.thaw()
        if process.poll() is None:
            process.kill()
            process.communicate()
    errors = stderr.decode()[-3000:]
    assert process.returncode == 0, errors
    assert time.monotonic() - started < postgres_keeper.ANSWER_SECONDS + 10, "stopped within the bound"
    assert answers == [503], "the waiting request got its answer"
    assert "stopped cleanly" in errors


def test_a_worker_that_loses_its_database_exits_with_an_error(
    tmp_path: Path,
    proxied: tuple[FreezableProxy, str],
) -> None:
    """``digest worker`` whose database goes away stops with exit 1, so that a supervisor that
    restarts on failure (systemd's ``Restart=on-failure``) restarts it; it said "stopped cleanly"
    and exited 0."""
    proxy, url = proxied
    env = cli_env(tmp_path / "data", DIGEST_STORE__URL=url, DIGEST_SECRET_KEY=SECRET) | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        time.sleep(3)
        assert process.poll() is None, "it polls the empty queue"
        proxy.refuse()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    errors = stderr.decode()
    assert process.returncode == 1, errors[-2000:]
    assert "the worker crashed" in errors and "stopped cleanly" not in errors
    assert "the worker stopped after an error" in errors
