"""Unsubscribes taken while another process holds the store (:mod:`digest.state.departures`): a one-click
unsubscribe to ``digest serve`` while a CLI ``digest run`` sends is answered at once, durable, seen
by every process, honoured by that run before its next email, and folded into the journal."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.errors import CycleLockedError
from digest.models import Subscriber
from digest.paths import JOURNAL_FILE, PENDING_FILE
from digest.signing import Signer
from digest.state.backend import open_backend
from digest.state.departures import append_departure, read_departures, take_departures
from digest.state.keeper import StoreKeeper
from digest.state.store import Store, open_store, store_lock
from tests.conftest import cli_env, on_postgresql, pass_store, pass_store_url, run_cli
from tests.servers import SmtpSink
from tests.test_end_to_end import EXPECTED, expected_ids
from tests.test_reliability import PATIENCE, Service, env, start_cli, today_api, wait_for  # noqa: F401 (fixtures)

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def on_disk(data_dir: Path) -> dict[str, Subscriber]:
    """What a fresh process reads from the TinyDB files (store, journal, pending departures)."""
    return {s.email: s for s in Store(data_dir, writable=False).subscribers()}


def in_store(data_dir: Path) -> dict[str, Subscriber]:
    """What a fresh process reads from this pass's store (TinyDB or PostgreSQL)."""
    with pass_store(data_dir, write=False) as store:
        return {s.email: s for s in store.subscribers()}


def cycle_holds(data_dir: Path, request: pytest.FixtureRequest) -> AbstractContextManager[object]:
    """The store held as a cycle holds it: TinyDB's file lock, or PostgreSQL's cycle (advisory) lock."""
    if on_postgresql(request.config):
        return open_backend(pass_store_url(), data_dir, exclusive=True, wait_seconds=5)
    return store_lock(data_dir, 5)


@pytest.mark.tinydb_only("the pending-departures file itself")
def test_lines_survive_a_torn_line_and_are_taken_once(tmp_path: Path) -> None:
    append_departure(tmp_path, "Ada@Example.org", AT)
    with open(tmp_path / PENDING_FILE, "ab") as torn:
        torn.write(b'{"unsubscribed": "half')  # a crash in the middle of a line
    append_departure(tmp_path, "bo@example.org", AT + timedelta(seconds=1))
    assert read_departures(tmp_path) == [
        ("ada@example.org", AT.isoformat()),
        ("bo@example.org", (AT + timedelta(seconds=1)).isoformat()),
    ]
    assert (tmp_path / PENDING_FILE).stat().st_mode & 0o777 == 0o600
    taken: list[Any] = []
    assert take_departures(tmp_path, taken.extend) == 2 and len(taken) == 2
    assert not (tmp_path / PENDING_FILE).exists()
    assert take_departures(tmp_path, taken.extend) == 0


@pytest.mark.tinydb_only("the pending-departures file itself")
def test_no_line_is_lost_between_appenders_and_the_taker(tmp_path: Path) -> None:
    """Appenders in threads while another thread takes the file again and again."""
    taken: list[tuple[str, str]] = []
    done = threading.Event()

    def taker() -> None:
        while not done.is_set():
            take_departures(tmp_path, taken.extend)

    def appender(n: int) -> None:
        for i in range(100):
            append_departure(tmp_path, f"p{n}-{i}@example.org", AT)

    thread = threading.Thread(target=taker)
    thread.start()
    appenders = [threading.Thread(target=appender, args=(n,)) for n in range(4)]
    for a in appenders:
        a.start()
    for a in appenders:
        a.join()
    done.set()
    thread.join()
    everything = [email for email, _ in taken] + [email for email, _ in read_departures(tmp_path)]
    assert sorted(everything) == sorted(f"p{n}-{i}@example.org" for n in range(4) for i in range(100))


@pytest.mark.tinydb_only("pending departures folded into the TinyDB journal by a flush")
def test_every_process_sees_them_a_later_signup_wins_and_a_flush_folds_them(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",), subscribed_at=AT - timedelta(days=9)))
        store.save_subscriber(Subscriber("bo@example.org", ("nerf",), subscribed_at=AT - timedelta(days=9)))
    append_departure(tmp_path, "ada@example.org", AT)
    append_departure(tmp_path, "bo@example.org", AT)
    with open_store(tmp_path) as store:  # Bo signs up again later, before the pending lines are taken
        store.save_subscriber(Subscriber("bo@example.org", ("gs",), subscribed_at=AT + timedelta(hours=1)))
        assert store.subscriber("ada@example.org") is None
    assert not (tmp_path / PENDING_FILE).exists(), "the flush folded them into the journal"
    journal = (tmp_path / JOURNAL_FILE).read_text() if (tmp_path / JOURNAL_FILE).exists() else ""
    store = Store(tmp_path, writable=False)
    assert store.subscriber("ada@example.org") is None and store.departed_at("ada@example.org") == AT
    bo = store.subscriber("bo@example.org")
    assert bo is not None and bo.rules == ("gs",), "the sign-up after the unsubscribe stands"
    assert journal or (tmp_path / "deliveries.journal.1").exists()


@pytest.mark.tinydb_only("the TinyDB keeper and the store's file lock")
def test_the_keeper_records_an_unsubscribe_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",), subscribed_at=AT))
        store.save_subscriber(Subscriber("bo@example.org", ("nerf",), subscribed_at=AT))
    keeper = StoreKeeper(tmp_path, write_wait_seconds=3.0)
    keeper.store()
    with store_lock(tmp_path, 5):  # as a CLI `digest run` holds it
        started = time.monotonic()
        assert keeper.write(lambda s: s.remove_subscriber("ada@example.org"), departure="ada@example.org") is None
        took = time.monotonic() - started
        assert took < 2.0, f"{took:.1f} s: an unsubscribe waits half a second, not the 3 s of other writes"
        assert keeper.store().subscriber("ada@example.org") is None, "shown at once"
        assert "ada@example.org" not in on_disk(tmp_path), "durable, and seen by any other process"
        future = keeper.submit(lambda s: s.save_subscriber(Subscriber("cy@example.org", ("x",))))
        with pytest.raises(CycleLockedError):  # any other change waits its 3 s, then says "busy"
            future.result(timeout=10)
    assert keeper.store().subscriber("bo@example.org") is not None
    keeper.close()
    assert not (tmp_path / PENDING_FILE).exists()
    assert set(on_disk(tmp_path)) == {"bo@example.org"}


def test_one_click_to_serve_while_a_cli_run_sends_is_answered_and_honoured(
    env: dict[str, str],  # noqa: F811 (the fixture)
    smtp: SmtpSink,
    today_api: dict[str, list[dict[str, Any]]],  # noqa: F811 (the fixture)
) -> None:
    """The issue's case: ``digest run`` beside ``digest serve`` holds the store for its whole cycle.
    The one-click is answered 200 within a second or two, and that run does not mail the person."""
    data_dir = Path(env["DIGEST_DATA_DIR"])
    recipients: list[str] = []
    smtp.refuse_rcpt = lambda address: recipients.append(address.lower())  # type: ignore[method-assign,func-returns-value]
    service = Service(env, cron="0 0 1 1 *")  # never fires during the test
    run = None
    try:
        wait_for(lambda: service.health() is not None, "the web server")
        # the run sends one email each 3 s after the first: longer than the one-click may take (2.5 s below)
        smtp.delay_after, smtp.delay_seconds = 1, 3.0
        run = start_cli("run", env=env)
        wait_for(lambda: smtp.delaying == 1, "the CLI run to be sending its second email")
        waiting = [
            a for a in EXPECTED if a not in recipients and expected_ids(today_api, list(today_api), EXPECTED[a][1])
        ]
        assert waiting, recipients
        victim = waiting[-1]
        secret = (data_dir / "secret_key").read_text(encoding="utf-8").strip()
        started = time.monotonic()
        answer = httpx.post(
            f"http://127.0.0.1:{service.port}/unsubscribe",
            params={"token": Signer(secret).sign("unsubscribe", victim)},
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=PATIENCE,
        )
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert took < 2.5, f"answered in {took:.1f} s"
        assert victim not in in_store(data_dir), "durable before the 200, for every process"
        assert run.poll() is None, "the run was still sending"
        _, err = run.communicate(timeout=PATIENCE)
        assert run.returncode == 0, err
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        service.kill()
    assert smtp.to(victim) == [], "the run skipped the person who left"
    assert victim not in in_store(data_dir)
    assert not (data_dir / PENDING_FILE).exists(), "the run folded the line into the store"
    status = run_cli("subscribers", env=env)
    assert victim not in status.stdout


def test_the_cli_unsubscribe_is_not_refused_while_a_cycle_holds_the_store(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cli = cli_env(tmp_path)
    with pass_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",), subscribed_at=AT))
    with cycle_holds(tmp_path, request):  # a cycle holds it for longer than anyone waits
        done = run_cli("unsubscribe", "Ada@Example.org", env=cli)
        unknown = run_cli("unsubscribe", "nobody@example.org", env=cli)
        assert "ada@example.org" not in in_store(tmp_path), "seen by every process while the cycle runs"
    assert done.returncode == 0, done.stderr
    assert "unsubscribed Ada@Example.org" in done.stdout
    assert "ada@example.org" not in in_store(tmp_path)
    assert unknown.returncode == 2 and "no subscriber" in unknown.stderr
    if on_postgresql(request.config):  # no file lock: the departure is a row at once
        with pass_store(tmp_path, write=False) as store:
            assert store.departed_at("ada@example.org") is not None
    else:  # the file lock is held: the departure waits in the pending file for that cycle
        assert PENDING_FILE in done.stderr
        assert [address for address, _ in read_departures(tmp_path)] == ["ada@example.org"]
