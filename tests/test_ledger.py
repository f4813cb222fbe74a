"""The compact delivery ledger: its codec, its migration from v2, and what the store keeps on disk."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.models import Item
from digest.state.ledger import Ledger, _base36, _base36_digits, decode, encode
from digest.state.store import JOURNAL_SYNC_LINES, Store, delivery_note, open_store

pytestmark = pytest.mark.tinydb_only("digest.json's compact ledger, its v2 migration and the journal")

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def paper(item_id: str, listed: date) -> Item:
    return Item(id=item_id, source="hf_papers", title=item_id, abstract="", url="u", listed_on=listed)


@given(st.sets(st.integers(min_value=0, max_value=10**9)))
def test_codec_round_trips(ordinals: set[int]) -> None:
    assert decode(encode(ordinals)) == sorted(ordinals)


@given(st.integers(min_value=0, max_value=10**12))
def test_base36_is_the_canonical_form(value: int) -> None:
    """Short values come from a table: the same digits as computing them, no leading zeros."""
    assert _base36(value) == _base36_digits(value)
    assert int(_base36(value), 36) == value and (value == 0 or not _base36(value).startswith("0"))


def test_codec_is_compact() -> None:
    assert encode([5, 7, 40]) == "5.2.x"
    assert len(encode(range(100_000, 100_040))) < 100  # a day's deliveries: a few characters each


def test_ledger_reads_only_the_days_asked_for_and_prunes_by_day() -> None:
    ledger = Ledger()
    ledger.add("a@x.org", {"2026-11-18": [1, 2], "2026-11-20": [9]})
    ledger.add("a@x.org", {"2026-11-20": [3]})
    assert ledger.delivered("a@x.org") == {1, 2, 3, 9}
    assert ledger.delivered("a@x.org", since="2026-11-19") == {3, 9}
    ledger.prune("2026-11-19")
    assert ledger.days == {"a@x.org": {"2026-11-20": encode([3, 9])}}


V2_STORE = {
    "meta": {"1": {"schema_version": 2, "prune_horizon": None}},
    "seen": {"1": {"id": "a", "listed_on": "2026-11-19"}, "2": {"id": "b", "listed_on": "2026-11-20"}},
    "ledger": {"1": {"email": "x@example.org", "items": {"a": "2026-11-19", "b": "2026-11-20", "z": "2026-11-20"}}},
    "sources": {},
    "failures": {},
}


def test_a_version_2_ledger_is_compacted_and_nothing_forgotten(tmp_path: Path) -> None:
    (tmp_path / "digest.json").write_text(json.dumps(V2_STORE))
    with open_store(tmp_path) as store:
        assert store.delivered_ids("x@example.org") == {"a", "b", "z"}
        assert store.delivered_ids("x@example.org", since=date(2026, 11, 20)) == {"b", "z"}
    written = json.loads((tmp_path / "digest.json").read_text())
    seen = {doc["id"]: doc["listed_on"] for doc in written["seen"].values()}
    assert seen["z"] == "2026-11-20"  # delivered but never seen: now it is
    (ledger,) = written["ledger"].values()
    assert "items" not in ledger and set(ledger["days"]) == {"2026-11-19", "2026-11-20"}
    assert sorted(doc["n"] for doc in written["seen"].values()) == [0, 1, 2]
    assert (tmp_path / "digest.json.v2.bak").exists()


def test_ordinals_survive_reopening_and_new_items_get_new_ones(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.upsert_items([paper("a", date(2026, 11, 19)), paper("b", date(2026, 11, 20))], NOW)
        store.record_note(delivery_note("x@example.org", [paper("b", date(2026, 11, 20))], "d1"), NOW)
    with open_store(tmp_path) as store:
        store.upsert_items([paper("c", date(2026, 11, 21))], NOW)
        store.record_note(delivery_note("x@example.org", [paper("c", date(2026, 11, 21))], "d2"), NOW)
    again = Store(tmp_path, writable=False)
    assert again.delivered_ids("x@example.org") == {"b", "c"}
    seen = json.loads((tmp_path / "digest.json").read_text())["seen"].values()
    assert sorted((d["id"], d["n"]) for d in seen) == [("a", 0), ("b", 1), ("c", 2)]


def test_every_journal_line_is_in_the_file_before_the_next_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines are written through at once (a crash keeps them); fsync comes in groups and at flush."""
    monkeypatch.setattr("digest.state.store.JOURNAL_SYNC_SECONDS", 3600.0)  # only the count triggers a sync here
    store = Store(tmp_path)
    for n in range(JOURNAL_SYNC_LINES + 3):
        store.record_note(delivery_note("x@example.org", [paper(f"p{n}", date(2026, 11, 20))], f"d{n}"), NOW)
        lines = (tmp_path / "deliveries.journal").read_text().splitlines()
        assert len(lines) == n + 1
    assert store._journal_unsynced == 3  # one group of JOURNAL_SYNC_LINES was synced
    store.flush()
    assert store._journal_unsynced == 0
    assert Store(tmp_path).delivered_ids("x@example.org") == {f"p{n}" for n in range(JOURNAL_SYNC_LINES + 3)}
