"""``digest doctor``: look the data directory over, and repair a damaged store from its backup.

A store file that does not parse is never overwritten by digest (start-up stops and names it).
``repair`` moves it aside (kept, renamed ``digest.json.damaged-<time>``), restores the last good
backup (``digest.json.bak``) and replays the journals on top of it, so the repaired store still knows
every email that was handed over (nothing is sent twice) and every subscriber change since the
backup (nobody who unsubscribed comes back). It holds the store lock throughout, so no cycle can
run while it works. A store or backup that parses but has the wrong shape counts as damaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from digest.errors import StoreCorruptError, StoreError
from digest.paths import FOLDED_JOURNAL_FILE, JOURNAL_FILE, STORE_FILE
from digest.settings import data_dir_problem
from digest.state.files import read_json_file, remove_stale_temp_files, write_atomically
from digest.state.migrations import SCHEMA_VERSION, migrate, schema_version
from digest.state.shape import shape_problems
from digest.state.store import Store, journal_entry_ok, store_lock


@dataclass(slots=True)
class Examination:
    """What ``doctor`` found: facts worth showing, and problems that need ``--repair`` or a person."""

    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    store_ok: bool = True
    backup_ok: bool = False
    writable: bool = True  # False: no cycle or change can be recorded (the problem says why and what to do)
    repair_hint: str | None = None  # what to do instead of --repair (a PostgreSQL store has none)


def check_store_file(path: Path) -> str | None:
    """None when ``path`` is a store this digest can read, else what is wrong with it."""
    try:
        data = read_json_file(path)
        version = schema_version(data)
        if version > SCHEMA_VERSION:
            return f"{path} has schema version {version}, newer than this digest ({SCHEMA_VERSION})"
        upgraded, _ = migrate(data, str(path))
    except (StoreCorruptError, StoreError) as exc:
        problem = str(exc).split("; `digest doctor")[0].split("; run `digest doctor")[0]
        return problem if str(path) in problem else f"{path}: {problem}"
    problems = shape_problems(upgraded)
    if problems:
        return f"{path} is not a digest store as written: {'; '.join(problems)}"
    return None


def journal_lines(path: Path) -> tuple[int, int]:
    """(complete entries, unreadable lines) of a delivery journal."""
    if not path.exists():
        return 0, 0
    good = bad = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        good += journal_entry_ok(entry)
    return good, bad


def examine(data_dir: Path) -> Examination:
    found = Examination()
    # A data_dir digest cannot write passes every other check while each cycle fails: say so first.
    unwritable = data_dir_problem(data_dir, write=True) if data_dir.is_dir() else None
    if unwritable:
        found.writable = False
        found.problems.append(unwritable)
    store, backup = data_dir / STORE_FILE, data_dir / f"{STORE_FILE}.bak"
    if not store.exists() and backup.exists():
        found.store_ok = False
        found.problems.append(f"store file {store} is missing but its backup is there")
    elif not store.exists():
        found.notes.append(f"no store yet at {store} (it is created by the first change)")
    else:
        problem = check_store_file(store)
        if problem:
            found.store_ok = False
            found.problems.append(problem)
        else:
            found.notes.append(f"store {store}: ok, schema version {schema_version(read_json_file(store))}")
    if backup.exists():
        problem = check_store_file(backup)
        found.backup_ok = problem is None
        when = datetime.fromtimestamp(backup.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
        found.notes.append(f"backup {backup} (from {when}): {'ok' if problem is None else problem}")
    else:
        found.notes.append(f"no backup yet at {backup}")
    good, bad = journal_lines(data_dir / JOURNAL_FILE)
    if good or bad:
        found.notes.append(
            f"{good} entry(ies) (deliveries, subscriber changes) in {data_dir / JOURNAL_FILE} not yet folded "
            "into the store (the next write does)"
            + (f"; {bad} unreadable line(s), from a crash mid-write, are ignored" if bad else "")
        )
    for temp in sorted(data_dir.glob(f".{STORE_FILE}.*.tmp")):
        found.notes.append(f"leftover temp file {temp} from an interrupted write (harmless; --repair removes it)")
    return found


def repair(data_dir: Path, wait_seconds: float = 60) -> str:
    """Restore a damaged store from its backup, replaying deliveries; says what it did."""
    store, backup = data_dir / STORE_FILE, data_dir / f"{STORE_FILE}.bak"
    with store_lock(data_dir, wait_seconds):
        remove_stale_temp_files(store)
        if not store.exists() and not backup.exists():
            return f"no store yet at {store}; nothing to repair"
        if store.exists() and check_store_file(store) is None:
            return f"store {store} is healthy; nothing to repair"
        if store.exists() and _newer(store):
            raise StoreError(f"{store} was written by a newer digest: upgrade digest; nothing was changed")
        problem = check_store_file(backup) if backup.exists() else f"there is no backup {backup}"
        if problem:
            raise StoreError(f"cannot repair {store}: {problem}; both files were left untouched")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        damaged = store.with_name(f"{STORE_FILE}.damaged-{stamp}")
        if store.exists():
            store.rename(damaged)
        write_atomically(store, backup.read_bytes())
        replayed = _merge_journals(data_dir)
        repaired = Store(data_dir)  # folds the journal into the ledger...
        repaired.flush()  # ...and writes the repaired store
    return (
        f"restored {store} from {backup}; replayed {replayed} journal entries (deliveries, so none is sent "
        "twice, and subscriber changes, so nobody who left comes back); "
        + (f"the damaged file is kept as {damaged}" if damaged.exists() else "the store file was missing")
    )


def _newer(path: Path) -> bool:
    try:
        return schema_version(read_json_file(path)) > SCHEMA_VERSION
    except StoreError:
        return False


def _merge_journals(data_dir: Path) -> int:
    """Put the journal folded by the last flush back in front of the live one; return entries."""
    folded, live = data_dir / FOLDED_JOURNAL_FILE, data_dir / JOURNAL_FILE
    parts = [p.read_bytes() for p in (folded, live) if p.exists()]
    text = b"".join(part if part.endswith(b"\n") or not part else part + b"\n" for part in parts)
    if text:
        write_atomically(live, text)
    good, _ = journal_lines(live)
    return good
