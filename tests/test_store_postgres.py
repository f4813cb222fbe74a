"""The store's promises on both backends (TinyDB and a real PostgreSQL), and ``digest migrate-store``.

The scenarios are those of ``test_store.py``, ``test_ledger.py`` and ``test_fault_delivery.py``
that any backend must keep: a paper is first listed once, a delivery survives a crash (here a real
``kill -9`` mid-sends), pruning never lets a paper back, leaving keeps the ledger, a snapshot's
changes are dropped. PostgreSQL's own: the ledger's key is a constraint, each email is committed
alone, one cycle at a time, and a database from a newer digest is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.cycle.run import run_once
from digest.errors import CycleLockedError, StoreError
from digest.models import CycleReport, Item, SourceReport, Subscriber
from digest.settings import load_settings
from digest.sources.sample import SampleSource
from digest.state.backend import StoreBackend
from digest.state.postgres.copy import copy_store
from digest.state.postgres.queue import hand_back
from digest.state.postgres.schema import SCHEMA_VERSION
from digest.state.postgres.store import PostgresStore, storable_json
from digest.state.store import CYCLES_KEPT, Store, delivery_note, open_store
from tests.conftest import ROOT, run_cli
from tests.postgres_server import PostgresServer, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
AS_OF = date(2026, 11, 20)  # a day of the bundled sample

Opener = Callable[..., StoreBackend]


def paper(item_id: str, listed: date = date(2026, 11, 20)) -> Item:
    return Item(id=item_id, source="hf_papers", title=f"Paper {item_id}", abstract="", url="u", listed_on=listed)


@pytest.fixture(params=["tinydb", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Opener]]:
    """(the store's URL, a function opening it as a new process would: ``writable`` as Store's)."""
    if request.param == "tinydb":
        yield "tinydb:", lambda writable=True: Store(tmp_path, writable=writable)
        return
    url = request.getfixturevalue("postgres_url")
    opened: list[PostgresStore] = []

    def open_postgres(writable: bool = True) -> PostgresStore:
        store = PostgresStore(url, data_dir=tmp_path, writable=writable)
        opened.append(store)
        return store

    yield url, open_postgres
    for store in opened:
        store.close_connection()


@pytest.fixture
def reopen(backend: tuple[str, Opener]) -> Opener:
    return backend[1]


def test_items_keep_their_first_listing_date(reopen: Opener) -> None:
    store = reopen()
    assert [i.id for i in store.upsert_items([paper("a", date(2026, 11, 19))], NOW)] == ["a"]
    store.close()
    store = reopen()
    assert store.upsert_items([paper("a", date(2026, 11, 20)), paper("b")], NOW) == [paper("b")]
    assert store.item("a") == paper("a", date(2026, 11, 19))
    assert [i.id for i in store.items_listed_between(date(2026, 11, 19), date(2026, 11, 19))] == ["a"]
    assert [i.id for i in store.items_listed_between(date(2026, 11, 19), date(2026, 11, 20))] == ["a", "b"]
    assert store.seen_count == 2
    store.close()


def test_text_of_every_kind_is_kept(reopen: Opener) -> None:
    title = "Müller’s 3D — 多模态 😀 <script>"
    store = reopen()
    store.upsert_items([Item(id="x", source="hf_papers", title=title, abstract="", url="u", listed_on=AS_OF)], NOW)
    store.save_subscriber(Subscriber("zoë@example.org", ("größe",), name="Zoë"))
    store.close()
    again = reopen(writable=False)
    assert [i.title for i in again.items_listed_between(AS_OF, AS_OF)] == [title]
    assert again.subscriber("ZOË@example.org") == Subscriber("zoë@example.org", ("größe",), name="Zoë")


def test_deliveries_survive_a_crash_before_any_flush(reopen: Opener) -> None:
    store = reopen()
    store.record_note(delivery_note("A@example.org", [paper("x")], "d1"), NOW)
    # The process dies: no flush, no close (a PostgreSQL connection just drops).
    if isinstance(store, PostgresStore):
        store.connection.close()
    del store
    again = reopen()
    assert again.delivered_ids("a@example.org") == {"x"}
    again.close()
    assert reopen().delivered_ids("a@example.org") == {"x"}


def test_delivered_ids_since_a_day(reopen: Opener) -> None:
    store = reopen()
    store.record_note(delivery_note("x@example.org", [paper("a", date(2026, 11, 19)), paper("b")], "d1"), NOW)
    assert store.delivered_ids("x@example.org") == {"a", "b"}
    assert store.delivered_ids("X@example.org", since=date(2026, 11, 20)) == {"b"}
    assert store.delivered_ids("y@example.org") == set()
    store.close()


def test_delivered_to_several_people_at_once_is_delivered_ids_of_each(reopen: Opener) -> None:
    store = reopen()
    store.record_note(delivery_note("x@example.org", [paper("a", date(2026, 11, 19)), paper("b")], "d1"), NOW)
    store.record_note(delivery_note("z@example.org", [paper("c")], "d2"), NOW)
    got = store.delivered_to(["X@example.org", "y@example.org", "z@example.org"], date(2026, 11, 20))
    assert got == {"x@example.org": {"b"}, "y@example.org": set(), "z@example.org": {"c"}}
    assert store.delivered_to([], date(2026, 11, 20)) == {}
    store.close()


def test_a_paper_recorded_twice_for_one_person_is_one_delivery(reopen: Opener) -> None:
    store = reopen()
    store.record_note(delivery_note("x@example.org", [paper("a")], "d1"), NOW)
    store.record_note(delivery_note("x@example.org", [paper("a"), paper("b")], "d2"), NOW + timedelta(hours=1))
    assert store.delivered_ids("x@example.org") == {"a", "b"}
    store.close()


def test_prune_never_lets_an_old_item_back(reopen: Opener) -> None:
    store = reopen()
    store.upsert_items([paper("old", date(2026, 9, 1)), paper("new")], NOW)
    store.record_note(delivery_note("a@example.org", [paper("old", date(2026, 9, 1)), paper("new")], "d"), NOW)
    store.prune(date(2026, 10, 1))
    assert store.delivered_ids("a@example.org") == {"new"}
    assert store.candidate_floor() == date(2026, 10, 1)
    store.prune(date(2026, 9, 15))  # monotonic
    assert store.prune_horizon == date(2026, 10, 1)
    assert store.upsert_items([paper("old", date(2026, 11, 20))], NOW) == []
    assert store.item("old") is None
    store.close()
    assert reopen().candidate_floor() == date(2026, 10, 1)


def test_unsubscribe_keeps_the_ledger_and_notes_the_departure(reopen: Opener) -> None:
    store = reopen()
    store.save_subscriber(Subscriber("a@example.org", ("4090",)))
    store.record_note(delivery_note("a@example.org", [paper("x")], "d"), NOW)
    assert store.remove_subscriber("A@example.org")
    assert not store.remove_subscriber("nobody@example.org")
    store.close()
    again = reopen()
    assert again.subscriber("a@example.org") is None
    assert again.delivered_ids("a@example.org") == {"x"}
    left = again.departed_at("a@example.org")
    assert left is not None and left.tzinfo is not None
    assert again.departed_count() == 2  # both asked; neither is subscribed
    again.save_subscriber(Subscriber("a@example.org", ("gpu",), subscribed_at=datetime.now(UTC) + timedelta(seconds=5)))
    assert again.departed_count() == 1
    again.forget_departed("a@example.org", datetime.now(UTC).isoformat())  # older than the new sign-up
    assert again.subscriber("a@example.org") is not None
    again.close()


def test_progress_changes_only_the_cycles_fields(reopen: Opener) -> None:
    store = reopen()
    store.save_subscribers([Subscriber("a@example.org", ("4090",)), Subscriber("b@example.org", ("gpu",))])
    snapshot = store.subscribers()
    store.save_subscriber(Subscriber("a@example.org", ("5090",), active=False))  # changed while the cycle sent
    store.remove_subscriber("b@example.org")  # left while the cycle sent
    store.record_progress([_progressed(s) for s in snapshot])
    a = store.subscriber("a@example.org")
    assert a is not None and a.rules == ("5090",) and not a.active and a.caught_up_to == AS_OF
    assert store.subscriber("b@example.org") is None
    assert [s.email for s in store.subscribers()] == ["a@example.org"]
    assert store.subscribers(active_only=True) == []
    store.close()


def _progressed(person: Subscriber) -> Subscriber:
    from dataclasses import replace

    return replace(person, caught_up_to=AS_OF, last_delivery_at=NOW)


def test_subscribers_keep_their_order_and_an_import_is_one_change(reopen: Opener) -> None:
    store = reopen()
    people = [Subscriber(f"r{n}@example.org", ("diffusion",)) for n in range(5)]
    store.save_subscribers(people)
    store.save_subscriber(Subscriber("r2@example.org", ("gpu",)))
    store.close()
    assert [s.email for s in reopen().subscribers()] == [p.email for p in people]


def test_a_snapshots_changes_are_dropped(reopen: Opener) -> None:
    store = reopen()
    store.save_subscriber(Subscriber("a@example.org", ("4090",)))
    store.close()
    snapshot = reopen(writable=False)
    snapshot.upsert_items([paper("x")], NOW)
    snapshot.save_subscriber(Subscriber("b@example.org", ("gpu",)))
    assert snapshot.item("x") is not None  # a dry run sees its own changes...
    snapshot.close()
    again = reopen()
    assert again.item("x") is None and again.subscriber("b@example.org") is None  # ...and nobody else does
    assert again.subscriber("a@example.org") is not None


def test_sources_failures_and_cycles_are_kept(reopen: Opener) -> None:
    store = reopen()
    store.record_source(
        SourceReport(name="hf_papers", ok=False, error="timeout"),
        [date(2026, 11, 19)],
        NOW,
        as_of=AS_OF,
        fetched_through=AS_OF,
        lost=[(date(2026, 10, 1), date(2026, 10, 3), "too old")],
    )
    store.set_source_state("feed", {"etag": '"abc"'})
    store.record_failure("A@example.org", "550 no such user", NOW, permanent=True)
    store.record_failure("a@example.org", "550 no such user", NOW + timedelta(days=1), permanent=True)
    for n in range(CYCLES_KEPT + 3):
        store.record_cycle(CycleReport(started_at=NOW, as_of=AS_OF, fetched=n))
    store.close()
    again = reopen()
    assert again.failed_days("hf_papers") == [date(2026, 11, 19)]
    assert again.fetched_through("hf_papers") == AS_OF
    assert again.fetched_through("never") is None
    assert again.source_state("feed") == {"etag": '"abc"'}
    assert [s["name"] for s in again.source_states()] == ["feed", "hf_papers"]
    assert again.source_states()[1]["lost"][0]["why"] == "too old"
    [failure] = again.failures()
    assert failure["count"] == 2 and failure["since"] == NOW.isoformat()
    again.clear_failure("A@example.org")
    assert again.failures() == []
    assert [c["fetched"] for c in again.cycles(last=3)] == [CYCLES_KEPT, CYCLES_KEPT + 1, CYCLES_KEPT + 2]
    assert len(again.cycles(last=1000)) == CYCLES_KEPT
    again.close()


KILLED_SENDER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, date, datetime
    from pathlib import Path
    from digest.models import Item
    from digest.state.store import Store, delivery_note
    from digest.state.postgres.store import PostgresStore, storable_json

    url, folder = sys.argv[1], Path(sys.argv[2])
    store = Store(folder) if url == "tinydb:" else PostgresStore(url, data_dir=folder)
    for n in range(100000):
        item = Item(id=f"p{n}", source="hf_papers", title="t", abstract="", url="u", listed_on=date(2026, 11, 20))
        store.record_note(delivery_note(f"r{n % 7}@example.org", [item], f"d{n}"), datetime.now(UTC))
        print(n, flush=True)  # "the server accepted email n" has been recorded
    """
)


def test_kill_9_mid_sends_forgets_no_recorded_email(backend: tuple[str, Opener], tmp_path: Path) -> None:
    """A sender killed with ``kill -9`` between two emails: every email recorded before is known."""
    url, reopen_store = backend
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_SENDER, url, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as sender:
        assert sender.stdout is not None
        recorded = -1
        for line in sender.stdout:
            recorded = int(line)
            if recorded >= 150:
                break
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
    store = reopen_store()
    delivered = set().union(*(store.delivered_ids(f"r{k}@example.org") for k in range(7)))
    assert {f"p{n}" for n in range(recorded + 1)} <= delivered
    # The sender ran on past the last line read before the kill landed: what it recorded is a whole
    # prefix of the emails, none missing in between.
    assert delivered == {f"p{n}" for n in range(len(delivered))}
    store.close()


# -- PostgreSQL's own --------------------------------------------------------------------------------
def test_the_ledger_key_is_a_constraint(postgres_url: str) -> None:  # noqa: F811
    store = PostgresStore(postgres_url)
    store.record_note(delivery_note("a@example.org", [paper("x")], "d1"), NOW)
    with psycopg.connect(postgres_url) as other, pytest.raises(psycopg.errors.UniqueViolation):
        other.execute("INSERT INTO deliveries (email, item_id, listed_on) VALUES ('a@example.org', 'x', '2026-11-20')")
    row = store.connection.execute("SELECT digest_id, at FROM deliveries").fetchone()
    assert row == ("d1", NOW)
    store.close()


def test_each_email_is_committed_before_the_next_is_sent(postgres_url: str) -> None:  # noqa: F811
    store = PostgresStore(postgres_url)
    with psycopg.connect(postgres_url) as other:
        for n in range(3):
            store.record_note(delivery_note("a@example.org", [paper(f"p{n}")], f"d{n}"), NOW)
            (count,) = other.execute("SELECT count(*) FROM deliveries").fetchone() or (0,)
            other.rollback()
            assert count == n + 1  # another session sees it at once: committed, not waiting for a flush
    store.close()


def test_one_cycle_at_a_time(postgres_url: str) -> None:  # noqa: F811
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    first.lock_cycle(0)
    with pytest.raises(CycleLockedError, match="busy"):
        second.lock_cycle(0.3)
    first.close()  # the session ends, the lock goes with it (also when digest is killed)
    second.lock_cycle(0)
    second.close()


def test_schema_is_created_once_and_a_newer_one_refused(postgres_url: str) -> None:  # noqa: F811
    PostgresStore(postgres_url).close()
    PostgresStore(postgres_url).close()  # opening again applies nothing twice
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert connection.execute("SELECT version FROM digest_schema").fetchall() == [(SCHEMA_VERSION,)]
        connection.execute("UPDATE digest_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer digest"):
        PostgresStore(postgres_url)


def test_a_server_that_is_not_there_is_one_line_naming_it_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        PostgresStore("postgresql://digest:s3cret@127.0.0.1:1/digest")
    message = str(caught.value)
    assert "127.0.0.1" in message and "s3cret" not in message and "\n" not in message


def test_an_unknown_store_url_exits_2_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(DIGEST_DATA_DIR=str(tmp_path / "data"), DIGEST_STORE__URL="mysql://u:pw@db/digest")
    result = run_cli("status", env=env, cwd=ROOT)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "store.url" in line and "mysql://u:***@db/digest" in line and "pw@" not in line


# -- migrate-store --------------------------------------------------------------------------------
def test_migrate_store_copies_everything_and_a_cycle_then_sends_nothing_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp: SmtpSink,
    postgres_url: str,  # noqa: F811
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("DIGEST_DATA_DIR", str(data))
    monkeypatch.setenv("DIGEST_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("DIGEST_SMTP__PORT", str(smtp.port))
    monkeypatch.setenv("DIGEST_SMTP__SECURITY", "none")
    settings = load_settings()
    people = [f"reader{n}@example.org" for n in range(6)]
    with open_store(data) as store:
        store.save_subscribers(Subscriber(email, ("diffusion",)) for email in people)
        store.remove_subscriber(people[-1])
    first = run_once(settings, AS_OF, sources=[SampleSource()])
    assert first.sent == 5 and len(smtp.messages) == 5
    with open_store(data) as store:  # votes of people who stayed (the suggestions read them)
        voted = sorted(store.delivered_ids(people[0]))[:2]
        assert all(store.record_vote(people[0], paper, -1, datetime(2026, 11, 21, tzinfo=UTC)) for paper in voted)
    before = Store(data, writable=False)
    delivered = {email: before.delivered_ids(email) for email in people}
    assert all(delivered[email] for email in people[:5])

    counts = copy_store(data, postgres_url)
    assert counts.subscribers == 5 and counts.departures == 1 and counts.cycles == 1 and counts.votes == 2
    assert counts.deliveries == sum(len(ids) for ids in delivered.values())
    assert counts.seen == before.seen_count and counts.sources == len(before.source_states())
    with pytest.raises(StoreError, match="not empty"):  # a second copy would mix two stores
        copy_store(data, postgres_url)

    monkeypatch.setenv("DIGEST_STORE__URL", postgres_url)
    settings = load_settings()
    again = run_once(settings, AS_OF, sources=[SampleSource()])
    assert again.sent == 0 and len(smtp.messages) == 5  # nothing re-sent
    pg = PostgresStore(postgres_url)
    assert {email: pg.delivered_ids(email) for email in people} == delivered
    assert pg.votes(people[0]) == dict.fromkeys(voted, -1)
    assert len(pg.cycles(last=10)) == 2
    pg.close()


def test_migrate_store_from_the_command_line(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    data = tmp_path / "data"
    with open_store(data) as store:
        store.save_subscriber(Subscriber("a@example.org", ("4090",)))
        store.record_note(delivery_note("a@example.org", [paper("x")], "d"), NOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_DATA_DIR"] = str(data)
    tinydb_file = (data / "digest.json").read_bytes()
    result = run_cli("migrate-store", "--to", postgres_url, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "1 subscribers, 0 votes, 1 deliveries" in result.stdout
    refused = run_cli("migrate-store", "--to", "mysql://db/x", env=env, cwd=ROOT)
    assert refused.returncode == 2 and "mysql://db/x" in refused.stderr
    env["DIGEST_STORE__URL"] = postgres_url
    assert run_cli("subscribe", "b@example.org", "-k", "gpu", env=env, cwd=ROOT).returncode == 0
    listed = run_cli("subscribers", env=env, cwd=ROOT)
    assert listed.returncode == 0 and "a@example.org" in listed.stdout and "b@example.org" in listed.stdout
    exported = run_cli("export", str(tmp_path / "people.jsonl"), env=env, cwd=ROOT)
    assert exported.returncode == 0 and len((tmp_path / "people.jsonl").read_text().splitlines()) == 2
    assert run_cli("unsubscribe", "A@example.org", env=env, cwd=ROOT).returncode == 0
    assert run_cli("import", str(tmp_path / "people.jsonl"), env=env, cwd=ROOT).returncode == 0
    store = PostgresStore(postgres_url)
    assert [s.email for s in store.subscribers()] == ["b@example.org", "a@example.org"]
    assert store.delivered_ids("a@example.org") == {"x"}  # leaving and coming back keeps the ledger
    store.close()
    status = run_cli("status", env=env, cwd=ROOT)  # reads PostgreSQL, not the file beside it
    assert status.returncode == 0 and "queued for the workers: none" in status.stdout, status.stderr
    assert (data / "digest.json").read_bytes() == tinydb_file  # the TinyDB store was never touched


def test_the_same_scenarios_ran_on_both(postgres_server: PostgresServer) -> None:  # noqa: F811
    """The server the parametrised tests used is real: PostgreSQL 15 or later."""
    with psycopg.connect(postgres_server.url()) as connection:
        row = connection.execute("SHOW server_version_num").fetchone()
    assert row is not None and int(row[0]) >= 150000


@given(st.text(alphabet=st.sampled_from(["\x00", "\\", "u", "0", '"', "a", "é"]), max_size=40))
def test_storable_json_drops_nul_and_nothing_else(text: str) -> None:
    """``jsonb`` cannot hold a NUL: the store drops exactly those, and never an escaped backslash
    followed by "u0000"."""
    assert json.loads(storable_json({"title": text, "authors": [text]})) == {
        "title": text.replace("\x00", ""),
        "authors": [text.replace("\x00", "")],
    }


def test_a_paper_with_a_nul_is_stored_without_it(postgres_url: str) -> None:  # noqa: F811
    item = Item(
        id="nul-1", source="hf_papers", title="A\x00B \\u0000", abstract="x\x00", url="https://e/", listed_on=AS_OF
    )
    store = PostgresStore(postgres_url)
    assert store.upsert_items([item], NOW) == [item]
    kept = store.item("nul-1")
    store.close()
    assert kept is not None and (kept.title, kept.abstract) == ("AB \\u0000", "x")


def test_hand_back_restores_only_the_mark_its_queueing_set(postgres_url: str) -> None:  # noqa: F811
    """A worker that gives up hands the person's day back (:func:`digest.state.postgres.queue.hand_back`):
    only while their mark is still the one queueing set; ``None`` before is JSON null, not a lost record."""
    before, stamp, later = (datetime(2026, 11, day, 7, tzinfo=UTC) for day in (19, 20, 21))
    store = PostgresStore(postgres_url)
    store.save_subscribers(
        [
            Subscriber("a@example.org", ("x",), handled_at=stamp),
            Subscriber("b@example.org", ("x",), handled_at=later),  # a later cycle handled them since
            Subscriber("c@example.org", ("x",), handled_at=stamp),
        ]
    )
    hand_back(store, "a@example.org", before.isoformat(), stamp.isoformat())
    hand_back(store, "b@example.org", before.isoformat(), stamp.isoformat())
    hand_back(store, "c@example.org", None, stamp.isoformat())
    marks = {s.email: (s.handled_at, s.rules) for s in store.subscribers()}
    store.close()
    assert marks == {
        "a@example.org": (before, ("x",)),
        "b@example.org": (later, ("x",)),
        "c@example.org": (None, ("x",)),
    }
