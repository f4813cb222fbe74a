"""The store one step off the tested path: files of the wrong shape, a repair after recent changes,
a torn journal line, a full disk and a read-only data directory. Real files, real ``digest`` processes,
a real aiosmtpd server; the disk faults on a real tmpfs mounted for the test (root only)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.errors import StoreError, StoreWriteError
from digest.models import Item, Subscriber
from digest.paths import JOURNAL_FILE, STORE_FILE
from digest.state.store import Store, delivery_note, open_store
from tests.conftest import cli_env, pass_store, run_cli, tmpfs
from tests.servers import FakeHfApi, SmtpSink
from tests.test_end_to_end import DAY1, DAY2, EXPECTED, expected_ids, ids_in
from tests.test_reliability import subscribe_all, wait_for

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def paper(item_id: str, listed: date = date(2026, 11, 20)) -> Item:
    return Item(id=item_id, source="hf_papers", title=f"Paper {item_id}", abstract="", url="u", listed_on=listed)


@pytest.fixture
def env(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> dict[str, str]:
    environment = cli_env(tmp_path / "data", hf_api, smtp)
    subscribe_all(environment)
    return environment


def one_line_error(stderr: str) -> str:
    """The CLI's error: one line, no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("digest: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# -- a store that parses but has the wrong shape ---------------------------------------------------


def emptied(data: dict[str, Any]) -> Any:
    return {}


def tinydb_default(data: dict[str, Any]) -> Any:
    return {"_default": {}}


def subscribers_as_list(data: dict[str, Any]) -> Any:
    return {**data, "subscribers": []}


def meta_as_list(data: dict[str, Any]) -> Any:
    return {**data, "meta": [data["meta"]["1"]]}


def subscriber_without_email(data: dict[str, Any]) -> Any:
    first = next(iter(data["subscribers"]))
    data["subscribers"][first].pop("email")
    return data


def seen_as_string(data: dict[str, Any]) -> Any:
    return {**data, "seen": "2611.00001"}


def ledger_days_as_string(data: dict[str, Any]) -> Any:
    first = next(iter(data["ledger"]))
    data["ledger"][first]["days"] = "2026-11-20"
    return data


def first(table: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = table[next(iter(table))]
    return document


def ledger_code_not_base36(data: dict[str, Any]) -> Any:
    days = first(data["ledger"])["days"]
    days[next(iter(days))] = "0.8.!!"
    return data


def authors_as_a_number(data: dict[str, Any]) -> Any:
    first(data["items"])["authors"] = 7
    return data


def upvotes_as_text(data: dict[str, Any]) -> Any:
    first(data["items"])["upvotes"] = "1.2k"
    return data


def cycle_sources_as_text(data: dict[str, Any]) -> Any:
    first(data["cycles"])["sources"] = "x"
    return data


def subscriber_name_as_a_number(data: dict[str, Any]) -> Any:
    first(data["subscribers"])["name"] = 5
    return data


def schema_version_true(data: dict[str, Any]) -> Any:
    data["meta"]["1"]["schema_version"] = True  # an int to isinstance: it ran old migrations again
    return data


def two_seen_on_one_ordinal(data: dict[str, Any]) -> Any:
    documents = list(data["seen"].values())
    documents[1]["n"] = documents[0]["n"]
    return data


def ordinal_past_the_count(data: dict[str, Any]) -> Any:
    first(data["seen"])["n"] = 10**22
    return data


def seen_date_not_a_date(data: dict[str, Any]) -> Any:
    first(data["seen"])["listed_on"] = "garbage"
    return data


WRONG_SHAPES: list[Callable[[dict[str, Any]], Any]] = [
    emptied,
    tinydb_default,
    subscribers_as_list,
    meta_as_list,
    subscriber_without_email,
    seen_as_string,
    ledger_days_as_string,
    # Found by a review after the first fix: right types, wrong contents.
    ledger_code_not_base36,
    authors_as_a_number,
    upvotes_as_text,
    cycle_sources_as_text,
    subscriber_name_as_a_number,
    schema_version_true,
    two_seen_on_one_ordinal,
    ordinal_past_the_count,
    seen_date_not_a_date,
]


@pytest.mark.tinydb_only("a digest.json of the wrong shape, refused and repaired from its backup")
@pytest.mark.parametrize("damage", WRONG_SHAPES, ids=lambda f: f.__name__)
def test_a_store_of_the_wrong_shape_is_refused_untouched_and_repaired(
    damage: Callable[[dict[str, Any]], Any], env: dict[str, str], smtp: SmtpSink, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("run", "--date", DAY1, env=env).returncode == 0
    store, backup = data_dir / STORE_FILE, data_dir / f"{STORE_FILE}.bak"
    good = json.loads(store.read_bytes())
    store.write_text(json.dumps(damage(json.loads(store.read_bytes()))))
    damaged, backup_bytes = store.read_bytes(), backup.read_bytes()

    for command in (("run", "--date", DAY2), ("subscribe", "eve@example.org", "-k", "gpu"), ("status",)):
        refused = run_cli(*command, env=env)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        line = one_line_error(refused.stderr)
        assert str(store) in line and "doctor" in line, line
    assert store.read_bytes() == damaged and backup.read_bytes() == backup_bytes  # neither rewritten
    assert not list(data_dir.glob(f"{STORE_FILE}.v*.bak"))

    check = run_cli("doctor", env=env)
    assert check.returncode == 1 and "problem" in check.stderr and "no problems" not in check.stdout

    fixed = run_cli("doctor", "--repair", env=env)
    assert fixed.returncode == 0, fixed.stderr
    repaired = json.loads(store.read_bytes())
    emails = sorted(d["email"] for d in repaired["subscribers"].values())
    assert emails == sorted(d["email"] for d in good["subscribers"].values()) == sorted(EXPECTED)
    sent = len(smtp.messages)
    again = run_cli("run", "--date", DAY1, env=env)
    assert again.returncode == 0 and "sent 0" in again.stdout, again.stdout + again.stderr
    assert len(smtp.messages) == sent


@pytest.mark.tinydb_only("a digest.json nested too deeply to parse")
def test_a_store_nested_too_deeply_is_one_line_for_every_command(env: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "data" / STORE_FILE
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text('{"meta":' + "[" * 200_000)
    for command in (("status",), ("doctor",), ("doctor", "--repair")):
        result = run_cli(*command, env=env)
        assert result.returncode == 1 and "nested too deeply" in result.stderr, command
        assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.tinydb_only("a torn line in the TinyDB journal")
def test_an_import_cut_short_in_the_journal_imports_nobody(tmp_path: Path) -> None:
    """An import is one journal line: torn by a kill or a full disk, it is skipped whole."""
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
    crashed = Store(tmp_path)
    crashed.save_subscribers([Subscriber(f"p{n}@example.org", ("gpu",)) for n in range(500)])
    del crashed
    journal = tmp_path / JOURNAL_FILE
    whole = journal.read_bytes()
    assert whole.count(b"\n") == 1
    journal.write_bytes(whole[: len(whole) // 2])  # the kill came mid-write
    with open_store(tmp_path, write=False) as store:
        assert [s.email for s in store.subscribers()] == ["ada@example.org"]


@pytest.mark.tinydb_only("a line of the wrong shape in the TinyDB journal")
def test_a_journal_line_of_the_wrong_shape_never_poisons_the_store(env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("subscribe", "zed@example.org", "-k", "4090", env=env).returncode == 0
    with open(data_dir / JOURNAL_FILE, "a") as journal:
        journal.write('{"email":"alice@example.org","items":{"2611.99999":5},"at":"2026-11-20T07:00:00+00:00"}\n')
        journal.write('{"email":"alice@example.org","items":{"":"2026-11-20"},"at":"2026-11-20T07:00:00+00:00"}\n')
    assert run_cli("subscribe", "amy@example.org", "-k", "gpu", env=env).returncode == 0
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert run_cli("doctor", env=env).returncode == 0


@pytest.mark.tinydb_only("digest.json gone missing, restored from its backup")
def test_a_store_file_that_went_missing_is_not_started_over(env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("run", "--date", DAY1, env=env).returncode == 0
    (data_dir / STORE_FILE).unlink()
    refused = run_cli("run", "--date", DAY2, env=env)
    assert refused.returncode == 1 and "missing" in one_line_error(refused.stderr)
    assert not (data_dir / STORE_FILE).exists()
    assert run_cli("doctor", env=env).returncode == 1
    assert run_cli("doctor", "--repair", env=env).returncode == 0
    listed = run_cli("subscribers", env=env)
    assert all(address in listed.stdout for address in EXPECTED)


@pytest.mark.tinydb_only("the migration of an older digest.json")
def test_an_older_store_of_the_wrong_shape_is_refused_by_its_migration(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE).write_text(json.dumps({"meta": {"1": {"schema_version": 2}}, "ledger": {"1": 7}}))
    with pytest.raises(StoreError) as caught:
        Store(tmp_path)
    assert "left untouched" in str(caught.value) and str(tmp_path / STORE_FILE) in str(caught.value)
    assert not list(tmp_path.glob("*.bak"))


# -- a repair after recent changes -----------------------------------------------------------------


@pytest.mark.tinydb_only("a damaged digest.json repaired from its backup and journal")
def test_repair_keeps_every_subscriber_change_since_the_backup(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    """Subscribe, unsubscribe, change rules, then damage the store: the repaired store has every
    change (the backup predates them), and the person who left gets nothing more."""
    assert run_cli("run", "--date", DAY1, env=env).returncode == 0
    assert run_cli("unsubscribe", "bob@example.org", env=env).returncode == 0
    assert run_cli("subscribe", "eve@example.org", "-k", "4090", env=env).returncode == 0
    assert run_cli("subscribe", "carol@example.org", "-k", "fusion", env=env).returncode == 0  # new rules
    store = tmp_path / "data" / STORE_FILE
    store.write_bytes(store.read_bytes()[:-50])

    fixed = run_cli("doctor", "--repair", env=env)
    assert fixed.returncode == 0, fixed.stderr
    with open_store(tmp_path / "data", write=False) as repaired:
        people = {s.email: s.rules for s in repaired.subscribers()}
    assert "bob@example.org" not in people
    assert people["eve@example.org"] == ("4090",)
    assert people["carol@example.org"] == ("fusion",)

    before = {address: len(smtp.to(address)) for address in (*EXPECTED, "eve@example.org")}
    assert run_cli("run", "--date", DAY2, env=env).returncode == 0
    assert len(smtp.to("bob@example.org")) == before["bob@example.org"]  # never mailed again
    assert len(smtp.to("eve@example.org")) == 1
    want = expected_ids(hf_api.days, [DAY1, DAY2], EXPECTED["alice@example.org"][1])
    assert set(ids_in(smtp, "eve@example.org")) == want
    for address in EXPECTED:
        got = ids_in(smtp, address)
        assert len(got) == len(set(got)), f"{address} got a paper twice"


@pytest.mark.tinydb_only("the TinyDB journal, written at the change and not at the flush")
def test_a_change_made_just_before_a_crash_is_kept(tmp_path: Path) -> None:
    """The journal line is written (and fsynced) when the change is made, not at the flush."""
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
        store.save_subscriber(Subscriber("bo@example.org", ("gpu",)))
    crashed = Store(tmp_path)
    crashed.remove_subscriber("bo@example.org")
    crashed.save_subscriber(Subscriber("cy@example.org", ("nerf",)))
    del crashed  # never flushed: as if killed here
    with open_store(tmp_path, write=False) as store:
        assert sorted(s.email for s in store.subscribers()) == ["ada@example.org", "cy@example.org"]


def test_a_cycles_bookkeeping_never_brings_back_someone_who_left(tmp_path: Path) -> None:
    with pass_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
        ada = store.subscriber("ada@example.org")
        assert ada is not None
        store.remove_subscriber("ada@example.org")
        store.record_progress([ada])
        assert store.subscriber("ada@example.org") is None


# -- the journal -----------------------------------------------------------------------------------


@pytest.mark.tinydb_only("a torn line in the TinyDB journal")
def test_a_torn_journal_line_does_not_swallow_the_next_one(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.upsert_items([paper("a"), paper("b")], NOW)
    (tmp_path / JOURNAL_FILE).write_bytes(b'{"email":"ada@example.org","items":{"a":"2026-')  # a crash mid-line
    store = Store(tmp_path)
    store.record_note(delivery_note("bo@example.org", [paper("b")], "d1"), NOW)
    store._sync_journal()
    del store
    lines = (tmp_path / JOURNAL_FILE).read_bytes().split(b"\n")
    assert json.loads(lines[1])["email"] == "bo@example.org"
    with open_store(tmp_path, write=False) as store:
        assert store.delivered_ids("bo@example.org") == {"b"}
        assert store.delivered_ids("ada@example.org") == set()


@pytest.mark.tinydb_only("the temp file of digest.json's atomic write")
def test_a_leftover_temp_file_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
    stale = tmp_path / f".{STORE_FILE}.4242.tmp"
    stale.write_text("half a store")
    with open_store(tmp_path, write=False):
        assert stale.exists()  # a reader never deletes
    with open_store(tmp_path):
        pass
    assert not stale.exists()


# -- a full disk and a read-only one (a real tmpfs) ------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only; skipped elsewhere, never in CI)."""
    with tmpfs(tmp_path / "disk", "2m") as mount_point:
        yield mount_point


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the filler's path, to free it again."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as handle:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                pass
    return filler


@pytest.mark.tinydb_only("a full disk under digest.json and its journal")
def test_a_full_disk_stops_a_change_with_a_message_and_leaves_no_temp_file(small_disk: Path) -> None:
    data_dir = small_disk / "data"
    with open_store(data_dir) as store:
        store.upsert_items([paper(f"p{n}") for n in range(50)], NOW)
    filler = fill(small_disk)
    store = Store(data_dir)
    store.upsert_items([paper(f"q{n}") for n in range(2000)], NOW)
    with pytest.raises(StoreWriteError, match="disk is full") as caught:
        store.flush()
    assert str(data_dir) in str(caught.value)
    assert not list(data_dir.glob(".*.tmp"))
    # The journal's page is full too: a person's change is refused with the same message, not lost silently.
    journal = data_dir / JOURNAL_FILE
    filler.unlink()
    journal.write_bytes(b"\n" * 4096)  # exactly one page, so the next line needs a new one
    fill(small_disk)
    with pytest.raises(StoreWriteError, match="disk is full"):
        Store(data_dir).remove_subscriber("ada@example.org")
    (small_disk / "filler").unlink()
    with open_store(data_dir) as store:
        assert store.seen_count == 50
        store.save_subscriber(Subscriber("ada@example.org", ("4090",)))
    with open_store(data_dir, write=False) as store:
        assert store.subscriber("ada@example.org") is not None


@pytest.mark.tinydb_only("a full disk under digest.json and its journal (a PostgreSQL store is not on it)")
def test_a_disk_that_fills_up_mid_cycle_loses_nothing_and_sends_nothing_twice(
    hf_api: FakeHfApi, smtp: SmtpSink, small_disk: Path
) -> None:
    data_dir = small_disk / "data"
    env = cli_env(data_dir, hf_api, smtp)
    subscribe_all(env)
    smtp.delay_after, smtp.delay_seconds = 1, 2.0  # the second email waits: the disk fills meanwhile
    filled = threading.Event()

    def fill_when_second_is_in_flight() -> None:
        wait_for(lambda: smtp.delaying == 1, "the second email to be in flight")
        fill(small_disk)
        filled.set()

    filler = threading.Thread(target=fill_when_second_is_in_flight, daemon=True)
    filler.start()
    first = subprocess.run(
        [sys.executable, "-m", "digest", "run", "--date", DAY2], env=env, capture_output=True, text=True, timeout=120
    )
    filler.join(timeout=60)
    assert filled.is_set()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "disk is full" in one_line_error(first.stderr)
    assert not list(data_dir.glob(".*.tmp"))

    (small_disk / "filler").unlink()
    smtp.delay_after = None
    again = run_cli("run", "--date", DAY2, env=env)
    assert again.returncode == 0, again.stderr
    duplicates = 0
    for address, (_, pattern) in EXPECTED.items():
        got = ids_in(smtp, address)
        assert set(got) == expected_ids(hf_api.days, [DAY1, DAY2], pattern), address
        duplicates += len(got) - len(set(got))
    # At most the email the server accepted when the journal could not take its line.
    assert len(smtp.messages) <= len(EXPECTED) + 1
    assert duplicates <= max(len(ids_in(smtp, a)) for a in EXPECTED)


def test_a_read_only_data_dir_is_one_clear_line(env: dict[str, str], small_disk: Path, tmp_path: Path) -> None:
    data_dir = small_disk / "data"
    ro_env = {**env, "DIGEST_DATA_DIR": str(data_dir)}
    subscribe_all(ro_env)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    run = run_cli("run", "--date", DAY2, env=ro_env)
    assert run.returncode == 2, run.stderr
    line = one_line_error(run.stderr)
    assert "read-only" in line and str(data_dir) in line
    subscribe = run_cli("subscribe", "eve@example.org", "-k", "gpu", env=ro_env)
    assert subscribe.returncode == 2 and "read-only" in one_line_error(subscribe.stderr)
    status = run_cli("status", env=ro_env)  # reading still works
    assert status.returncode == 0, status.stderr
