"""One in-memory store per ``digest serve`` process (:mod:`digest.state.keeper`): shared by threads,
durable per change, reloaded after another process writes, safe across the render child's fork,
and a one-click unsubscribe that arrives while the scheduled cycle sends is answered at once and
stops that person's email."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.models import Subscriber
from digest.signing import Signer
from digest.state.keeper import StoreKeeper
from digest.state.postgres.queue import queue_summary
from digest.state.postgres.store import PostgresStore
from digest.state.store import Store
from tests.conftest import cli_env, pass_store, run_cli
from tests.servers import SmtpSink
from tests.test_end_to_end import EXPECTED, expected_ids
from tests.test_reliability import PATIENCE, Service, env, today_api, wait_for  # noqa: F401 (fixtures)


def on_disk(data_dir: Path) -> dict[str, Subscriber]:
    """What a fresh process would read: the store file plus the journal."""
    return {s.email: s for s in Store(data_dir, writable=False).subscribers()}


def in_store(data_dir: Path) -> dict[str, Subscriber]:
    """What a fresh process would read from this pass's store (TinyDB or PostgreSQL)."""
    with pass_store(data_dir, write=False) as store:
        return {s.email: s for s in store.subscribers()}


def queue_drained(data_dir: Path) -> bool:
    """No digest waits for a worker: on PostgreSQL ``digest serve``'s cycle queues the digests and its
    worker sends them after the cycle is recorded (README, "Past one machine"); TinyDB has no queue."""
    with pass_store(data_dir, write=False) as store:
        if not isinstance(store, PostgresStore):
            return True
        waiting, _, _ = queue_summary(store)
        return waiting == 0


@pytest.mark.tinydb_only("the TinyDB keeper: one store in memory, its file and journal")
def test_concurrent_writers_and_readers_share_one_store_and_every_change_is_durable(tmp_path: Path) -> None:
    keeper = StoreKeeper(tmp_path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        for round_ in range(5):
            person = Subscriber(f"w{n}-{round_}@example.org", (f"rule {round_}",))
            keeper.write(lambda store: store.save_subscriber(person))  # noqa: B023 (called at once)
            if round_ % 2:
                keeper.write(lambda store: store.remove_subscriber(person.email))  # noqa: B023

    def reader(n: int) -> None:
        for _ in range(20):
            keeper.read(lambda store: [s.email for s in store.subscribers()])
            keeper.store().subscriber(f"w{n}-0@example.org")

    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(writer, n) for n in range(10)] + [pool.submit(reader, n) for n in range(10)]
        for future in futures:
            if future.exception() is not None:
                errors.append(future.exception())  # type: ignore[arg-type]
    assert not errors
    in_memory = {s.email: s for s in keeper.read(lambda store: store.subscribers())}
    assert set(in_memory) == {f"w{n}-{r}@example.org" for n in range(10) for r in (0, 2, 4)}
    assert on_disk(tmp_path) == in_memory, "every change is on disk (file + journal) without a flush"
    keeper.close()
    assert not (tmp_path / "deliveries.journal").exists(), "close folds the journal into the file"
    assert on_disk(tmp_path) == in_memory


@pytest.mark.tinydb_only("the TinyDB keeper reloads the file another process wrote")
def test_a_change_by_another_process_is_seen_by_the_next_read(tmp_path: Path) -> None:
    keeper = StoreKeeper(tmp_path)
    keeper.write(lambda store: store.save_subscriber(Subscriber("ada@example.org", ("4090",))))
    assert keeper.store().subscriber("bo@example.org") is None
    result = run_cli("subscribe", "bo@example.org", "-k", "diffusion", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    seen = keeper.read(lambda store: store.subscriber("bo@example.org"))
    assert seen is not None and seen.rules == ("diffusion",)
    assert keeper.store().subscriber("ada@example.org") is not None, "the web's journalled change survived the CLI"
    keeper.write(lambda store: store.remove_subscriber("bo@example.org"))  # writes on top of the reloaded store
    assert set(on_disk(tmp_path)) == {"ada@example.org"}


@pytest.mark.tinydb_only("the TinyDB keeper's writes while its cycle holds the file lock")
def test_a_web_write_during_this_process_cycle_goes_to_memory_and_is_durable(tmp_path: Path) -> None:
    keeper = StoreKeeper(tmp_path, write_wait_seconds=1.0)
    keeper.write(lambda store: store.save_subscriber(Subscriber("ada@example.org", ("4090",))))
    with keeper.cycle(wait_seconds=5) as store:  # holds the file lock, as a scheduled cycle does
        done: list[bool] = []

        def unsubscribe() -> None:
            done.append(keeper.write(lambda s: s.remove_subscriber("ADA@example.org")))

        thread = threading.Thread(target=unsubscribe)
        thread.start()
        thread.join(PATIENCE)
        assert done == [True], "not blocked by the cycle's lock"
        assert store.subscriber("ada@example.org") is None, "the cycle sees it before its next send"
        assert "ada@example.org" not in on_disk(tmp_path), "durable before the answer"


def test_progress_keeps_what_a_person_changed_mid_cycle(tmp_path: Path) -> None:
    with pass_store(tmp_path) as store:
        planned = Subscriber("ada@example.org", ("4090",))
        store.save_subscriber(planned)
        store.save_subscriber(Subscriber("ada@example.org", ("diffusion",), active=False))  # the web, mid-cycle
        store.record_progress([Subscriber("ada@example.org", ("4090",), caught_up_to=None, last_delivery_at=None)])
        moved = store.subscriber("ada@example.org")
    assert moved is not None and moved.rules == ("diffusion",) and not moved.active


@pytest.mark.tinydb_only("the TinyDB store's in-process lock across a fork")
def test_a_forked_child_can_use_a_store_whose_lock_another_thread_holds(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait(PATIENCE)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(PATIENCE)
    try:
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists, and the holder's lock must not be inherited
            os._exit(0 if store.subscriber("ada@example.org") is not None else 1)
        deadline = time.monotonic() + 20
        status: Any = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung on the lock held by a thread of its parent")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join()


def test_one_click_unsubscribe_while_the_scheduled_cycle_sends(
    env: dict[str, str],  # noqa: F811 (the fixture)
    smtp: SmtpSink,
    today_api: dict[str, list[dict[str, Any]]],  # noqa: F811 (the fixture)
) -> None:
    """Answered 200 at once (not 503 "busy" after waiting for the cycle's lock), durable before
    the answer, and the person's digest, still to come in that cycle, is never sent."""
    recipients: list[str] = []
    smtp.refuse_rcpt = lambda address: recipients.append(address.lower())  # type: ignore[method-assign,func-returns-value]
    # the cycle sends one email each 3 s after the first: longer than the one-click may take (2.5 s
    # below), so a slow answer fails as slow, not as an email the cycle had time to send meanwhile
    smtp.delay_after, smtp.delay_seconds = 1, 3.0
    data_dir = Path(env["DIGEST_DATA_DIR"])
    service = Service(env, cron="*/5 * * * * *")
    try:
        wait_for(lambda: smtp.delaying == 1, "the scheduled cycle to be sending its second email")
        waiting = [a for a in EXPECTED if a not in recipients]
        assert waiting, recipients
        victim = waiting[-1]  # the last to be sent to
        assert expected_ids(today_api, list(today_api), EXPECTED[victim][1]), "the victim has a digest planned"
        secret = (data_dir / "secret_key").read_text(encoding="utf-8").strip()
        token = Signer(secret).sign("unsubscribe", victim)
        started = time.monotonic()
        answer = httpx.post(
            f"http://127.0.0.1:{service.port}/unsubscribe",
            params={"token": token},
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=PATIENCE,
        )
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert took < 2.5, f"answered in {took:.1f} s: it waited for the cycle"  # generous: a busy wait is 3 s
        assert victim not in in_store(data_dir), "durable before the 200"
        assert smtp.delaying == 1 or len(smtp.messages) < len(EXPECTED), "the cycle was still sending"

        def finished() -> bool:
            answer = service.health()
            done = answer is not None and answer.json().get("last_cycle") is not None
            return done and queue_drained(data_dir)

        wait_for(finished, "the cycle to finish")
    finally:
        service.kill()
    assert smtp.to(victim) == [], "no email after the unsubscribe"
    others = [a for a in EXPECTED if a != victim and expected_ids(today_api, list(today_api), EXPECTED[a][1])]
    assert all(smtp.to(a) for a in others), "everyone else got theirs"
    assert victim not in in_store(data_dir)
