"""The TinyDB store on a real file: atomic writes, corrupt files left alone, the journal after a crash."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import CycleLockedError, StoreCorruptError, StoreError
from digest.models import Item, SourceReport, Subscriber
from digest.ops.doctor import examine, repair
from digest.state.files import BufferedAtomicStorage, json_pieces
from digest.state.migrations import SCHEMA_VERSION
from digest.state.store import Store, delivery_note, open_store, store_lock

# The store's scenarios on both backends are tests/test_store_postgres.py.
pytestmark = pytest.mark.tinydb_only("digest.json, its journal, backup and file lock")

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def paper(item_id: str, listed: date = date(2026, 11, 20)) -> Item:
    return Item(id=item_id, source="hf_papers", title=f"Paper {item_id}", abstract="", url="u", listed_on=listed)


def test_items_keep_their_first_listing_date(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert [i.id for i in store.upsert_items([paper("a", date(2026, 11, 19))], NOW)] == ["a"]
    with open_store(tmp_path) as store:
        assert store.upsert_items([paper("a", date(2026, 11, 20)), paper("b")], NOW) == [paper("b")]
        assert store.item("a") == paper("a", date(2026, 11, 19))
        assert [i.id for i in store.items_listed_between(date(2026, 11, 19), date(2026, 11, 19))] == ["a"]


def test_the_store_file_is_ascii_and_keeps_every_character(tmp_path: Path) -> None:
    """Written as ASCII (read back, it takes one byte per character in memory), losing nothing."""
    title = "Müller’s 3D — 多模态 😀 <script>"
    with open_store(tmp_path) as store:
        store.upsert_items(
            [Item(id="x", source="hf_papers", title=title, abstract="", url="u", listed_on=NOW.date())], NOW
        )
        store.save_subscriber(Subscriber("zoë@example.org", ("größe",)))
    raw = (tmp_path / "digest.json").read_bytes()
    assert raw.isascii()
    with open_store(tmp_path) as store:
        assert [i.title for i in store.items_listed_between(NOW.date(), NOW.date())] == [title]
        assert store.subscriber("zoë@example.org") is not None


def test_nothing_is_written_until_flush_and_then_atomically(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(Subscriber("a@example.org", ("4090",)))
    assert not (tmp_path / "digest.json").exists()
    store.flush()
    first = (tmp_path / "digest.json").read_bytes()
    assert json.loads(first)["subscribers"]
    store.save_subscriber(Subscriber("b@example.org", ("gpu",)))
    store.flush()
    assert (tmp_path / "digest.json.bak").read_bytes() == first  # the last good copy is kept
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_truncated_store_is_reported_and_left_untouched(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("a@example.org", ("4090",)))
    path = tmp_path / "digest.json"
    truncated = path.read_bytes()[:-20]
    path.write_bytes(truncated)
    with pytest.raises(StoreCorruptError) as caught:
        Store(tmp_path)
    assert str(path) in str(caught.value) and "untouched" in str(caught.value)
    assert path.read_bytes() == truncated


def test_deliveries_survive_a_crash_through_the_journal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.record_note(delivery_note("A@example.org", [paper("x")], "d1"), NOW)
    del store  # the process dies before any flush
    again = Store(tmp_path)
    assert again.delivered_ids("a@example.org") == {"x"}
    again.flush()
    assert not (tmp_path / "deliveries.journal").exists()
    assert Store(tmp_path).delivered_ids("a@example.org") == {"x"}


def test_deliveries_after_a_flush_start_a_new_journal(tmp_path: Path) -> None:
    """The journal stays open between deliveries; a flush folds it away, and the next delivery
    must land in a new ``deliveries.journal``, not in the folded copy kept beside the backup."""
    store = Store(tmp_path)
    store.record_note(delivery_note("a@example.org", [paper("x")], "d1"), NOW)
    store.flush()
    store.record_note(delivery_note("a@example.org", [paper("y")], "d2"), NOW)
    folded = (tmp_path / "deliveries.journal.1").read_text().splitlines()
    current = (tmp_path / "deliveries.journal").read_text().splitlines()
    assert [json.loads(line)["digest"] for line in folded] == ["d1"]
    assert [json.loads(line)["digest"] for line in current] == ["d2"]
    del store  # a crash before the next flush: the new journal still has the second delivery
    assert Store(tmp_path).delivered_ids("a@example.org") == {"x", "y"}


def test_a_half_written_journal_line_is_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.record_note(delivery_note("a@example.org", [paper("x")], "d1"), NOW)
    with open(tmp_path / "deliveries.journal", "a") as journal:
        journal.write('{"email": "a@example.org", "items": {"y"')
    assert Store(tmp_path).delivered_ids("a@example.org") == {"x"}


def test_prune_never_lets_an_old_item_back(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.upsert_items([paper("old", date(2026, 9, 1)), paper("new")], NOW)
        store.record_note(delivery_note("a@example.org", [paper("old", date(2026, 9, 1)), paper("new")], "d"), NOW)
        store.prune(date(2026, 10, 1))
        assert store.delivered_ids("a@example.org") == {"new"}
        assert store.candidate_floor() == date(2026, 10, 1)
        # Re-listed later, the old paper keeps its first listing date, so it stays below the floor:
        # not new again, and not stored again.
        assert store.upsert_items([paper("old", date(2026, 11, 20))], NOW) == []
        assert store.item("old") is None


def test_a_write_that_changes_only_tinydb_tables_keeps_the_tables_the_store_holds(tmp_path: Path) -> None:
    """Seen items, items, subscribers and the ledger live outside TinyDB once read: every write of
    the file must still carry them, even one caused only by a cycle record or a source's state."""
    with open_store(tmp_path) as store:
        store.upsert_items([paper("x"), paper("y", date(2026, 11, 19))], NOW)
        store.save_subscriber(Subscriber("a@example.org", ("4090",)))
        store.record_note(delivery_note("a@example.org", [paper("x")], "d"), NOW)
    before = json.loads((tmp_path / "digest.json").read_bytes())
    with open_store(tmp_path) as store:
        store.record_source(SourceReport(name="hf_papers", ok=False), [date(2026, 11, 18)], NOW)
    after = json.loads((tmp_path / "digest.json").read_bytes())
    assert after["sources"] and not before.get("sources")
    for table in ("seen", "items", "subscribers", "ledger"):
        assert after[table] == before[table] and after[table]
    with open_store(tmp_path, write=False) as store:
        assert store.delivered_ids("a@example.org") == {"x"}
        assert store.item("y") == paper("y", date(2026, 11, 19))
        assert [s.email for s in store.subscribers()] == ["a@example.org"]


def test_opening_and_closing_without_a_change_writes_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("a@example.org", ("4090",)))
    written = (tmp_path / "digest.json").stat().st_mtime_ns
    with open_store(tmp_path) as store:
        assert store.subscriber("a@example.org") is not None
    assert (tmp_path / "digest.json").stat().st_mtime_ns == written
    assert not (tmp_path / "digest.json.bak").exists()


def test_unsubscribe_keeps_the_ledger(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("a@example.org", ("4090",)))
        store.record_note(delivery_note("a@example.org", [paper("x")], "d"), NOW)
        assert store.remove_subscriber("a@example.org")
    assert Store(tmp_path).delivered_ids("a@example.org") == {"x"}


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with store_lock(tmp_path, 0), pytest.raises(CycleLockedError, match="busy"), store_lock(tmp_path, 0.1):
        pass


V1_STORE = {
    "meta": {"1": {"schema_version": 1, "prune_horizon": None, "failed_days": {"hf_papers": ["2026-11-19"]}}},
    "subscribers": {"1": {"email": "a@example.org", "rules": ["4090"], "active": True}},
}


def test_a_version_1_store_is_migrated_and_the_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "digest.json"
    original = json.dumps(V1_STORE)
    path.write_text(original)
    with open_store(tmp_path) as store:
        assert store.failed_days("hf_papers") == [date(2026, 11, 19)]
        assert store.subscriber("a@example.org") is not None
    written = json.loads(path.read_text())
    assert written["meta"]["1"]["schema_version"] == SCHEMA_VERSION
    assert "failed_days" not in written["meta"]["1"]
    assert list(written["sources"].values()) == [{"name": "hf_papers", "failed_days": ["2026-11-19"]}]
    assert (tmp_path / "digest.json.v1.bak").read_text() == original


def test_a_store_from_a_newer_digest_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "digest.json"
    newer = json.dumps({"meta": {"1": {"schema_version": SCHEMA_VERSION + 1}}})
    path.write_text(newer)
    with pytest.raises(StoreError, match="newer digest") as caught:
        Store(tmp_path)
    assert str(path) in str(caught.value)
    assert path.read_text() == newer


def test_doctor_repairs_from_the_backup_without_forgetting_deliveries(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:  # a cycle: items fetched and flushed, then two emails sent
        store.save_subscriber(Subscriber("a@example.org", ("4090",)))
        store.upsert_items([paper("x"), paper("y")], NOW)
        store.flush()
        store.record_note(delivery_note("a@example.org", [paper("x")], "d1"), NOW)
        store.record_note(delivery_note("b@example.org", [paper("y")], "d2"), NOW)
    crashed = Store(tmp_path)  # a later delivery, then the process dies before any flush
    crashed.record_note(delivery_note("c@example.org", [paper("x")], "d3"), NOW)
    del crashed
    path = tmp_path / "digest.json"
    damaged = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(damaged)
    assert not examine(tmp_path).store_ok and examine(tmp_path).backup_ok

    message = repair(tmp_path)

    assert "restored" in message
    kept = list(tmp_path.glob("digest.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    repaired = Store(tmp_path)
    assert repaired.subscriber("a@example.org") is not None
    assert repaired.delivered_ids("a@example.org") == {"x"}
    assert repaired.delivered_ids("b@example.org") == {"y"}
    assert repaired.delivered_ids("c@example.org") == {"x"}
    assert examine(tmp_path).problems == []
    assert repair(tmp_path).endswith("nothing to repair")


def test_doctor_refuses_when_the_backup_is_bad_too(tmp_path: Path) -> None:
    (tmp_path / "digest.json").write_text('{"meta": ')
    (tmp_path / "digest.json.bak").write_text("")
    with pytest.raises(StoreError, match="left untouched"):
        repair(tmp_path)
    assert (tmp_path / "digest.json").read_text() == '{"meta": '


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(),
        st.dictionaries(st.integers(0, 5000).map(str), json_values, max_size=2500) | json_values,
        max_size=4,
    )
)
def test_store_pieces_are_exactly_the_json_of_the_whole(data: dict[str, object]) -> None:
    """The store is written in pieces to keep memory down; the bytes must be those of json.dumps."""
    whole = json.dumps(data, separators=(",", ":")).encode("ascii")
    assert b"".join(json_pieces(data)) == whole


def test_a_big_store_is_written_in_pieces_and_reads_back(tmp_path: Path) -> None:
    data = {"ledger": {str(n): {"e": f"reader{n}@example.org", "d": list(range(n % 7))} for n in range(1, 5001)}}
    pieces = list(json_pieces(data))
    assert len(pieces) > 5 and max(map(len, pieces)) < sum(map(len, pieces)) / 4
    assert b"".join(pieces) == json.dumps(data, separators=(",", ":")).encode("utf-8")
    storage = BufferedAtomicStorage(tmp_path / "digest.json")
    storage.write(data)
    storage.flush()
    assert json.loads((tmp_path / "digest.json").read_text(encoding="utf-8")) == data


@settings(max_examples=100, deadline=None)
@given(
    email=st.emails() | st.text(min_size=1, max_size=30),
    ids=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5, unique=True),
    digest_id=st.text(max_size=30),
)
def test_a_delivery_noted_in_advance_is_recorded_whole(email: str, ids: list[str], digest_id: str) -> None:
    """The render process makes the journal line but for its time (:func:`delivery_note`); the line
    the sender completes reads back as the whole record, whatever the ids and names hold."""
    note = delivery_note(email, [paper(item_id) for item_id in ids], digest_id)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder))
        store.record_note(note, NOW)
        store.flush()
        # As the store reads it back: lines end at "\n" only (an id may hold U+0085 or U+2028).
        [line] = (Path(folder) / "deliveries.journal.1").read_text(encoding="utf-8").split("\n")[:-1]
    assert json.loads(line) == {
        "email": email.lower(),
        "items": dict.fromkeys(ids, "2026-11-20"),
        "digest": digest_id,
        "at": NOW.isoformat(),
    }


def test_a_note_made_in_the_render_process_records_what_a_plain_note_records(tmp_path: Path) -> None:
    """The note carries the papers' ordinals, looked up in the render process's copy of the store;
    recorded, it leaves the same ledger and journal as a :func:`delivery_note` without them, and a paper
    with no ordinal yet (none looked up, none given there) gets one when it is recorded."""
    known = [paper("x"), paper("y", date(2026, 11, 19))]
    stores = {name: Store(tmp_path / name) for name in ("direct", "noted")}
    for store in stores.values():
        store.upsert_items(known, NOW)
    noted = stores["noted"]
    note = noted.delivery_note("A@example.org", known, "d1")
    assert note.ordinals is not None and sorted(note.ordinals) == ["2026-11-19", "2026-11-20"]
    unknown = noted.delivery_note("b@example.org", [paper("x"), paper("new")], "d2")
    assert unknown.ordinals is None
    noted.record_note(note, NOW)
    noted.record_note(unknown, NOW)
    stores["direct"].record_note(delivery_note("A@example.org", known, "d1"), NOW)
    stores["direct"].record_note(delivery_note("b@example.org", [paper("x"), paper("new")], "d2"), NOW)
    for store in stores.values():
        store.flush()
    direct, again = Store(tmp_path / "direct"), Store(tmp_path / "noted")
    for email in ("a@example.org", "b@example.org"):
        assert again.delivered_ids(email) == direct.delivered_ids(email)
    assert again.delivered_ids("b@example.org") == {"x", "new"}
    lines = {name: (tmp_path / name / "deliveries.journal.1").read_text().split("\n") for name in stores}
    assert [json.loads(line) for line in lines["noted"] if line] == [
        json.loads(line) for line in lines["direct"] if line
    ]
