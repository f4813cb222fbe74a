"""The local store: items seen, subscribers, the delivery ledger and the record of cycles.

One TinyDB file (``data_dir/digest.json``) on :class:`BufferedAtomicStorage`: everything is read
once into memory, changed there, and written atomically at a few checkpoints of a cycle. The big
tables (seen, items, subscribers, ledger, departures) are handed over from TinyDB to this class's own indexes
when read and produced again when written, so a year-old store is in memory once, not twice; the
file is written as ASCII JSON, which Python reads back at one byte per character. Deliveries
are the exception: each accepted email is appended at once to ``deliveries.journal`` (one JSON
line, written through to the OS before the next email is sent), so a crash or ``kill -9`` between two
sends never forgets who already got what; the journal is folded into the ledger at the next
checkpoint. The journal is fsynced in groups (every :data:`JOURNAL_SYNC_LINES` lines or
:data:`JOURNAL_SYNC_SECONDS`, and at every checkpoint): a fsync per email would cost as much as
sending it, and only a power cut (not a crash) can lose the last group, whose emails would then be
sent again with the same Message-ID.

Tables (schema version 3; :mod:`digest.state.migrations` upgrades older files on open):
- ``meta``: schema version and the prune horizon (ledger entries older than it are dropped, and
  items listed before it are never delivered again, which keeps "at most once, ever" true).
- ``seen``: every item id ever fetched, the date it was first listed and its ordinal ``n`` (compact;
  never pruned).
- ``items``: full records of items listed within ``retention_days``.
- ``subscribers``, ``ledger`` (email → {listed date: encoded ordinals}, see :mod:`digest.state.ledger`),
  ``cycles`` (last 200 reports).
- ``sources``: per source, the days it could not fetch (fetched again next cycle) and its last
  success and error.
- ``failures``: per address, the last refusal by the SMTP server (until a digest gets through).
- ``departures``: per address that ever unsubscribed, when it last did (kills older confirm links).
- ``votes``: per address and paper, the person's latest "more like this" (+1) or "not for me" (-1),
  journalled like a rule change; deleted with the person when they unsubscribe (``digest export``
  does not carry them: they only feed the manage page's suggestions).

Backups: the storage keeps the previous file as ``digest.json.bak``, and the journal folded by the
last flush that had deliveries is kept as ``deliveries.journal.1``. The backup plus that journal
hold every delivery ever recorded, so ``digest doctor --repair`` can restore a damaged store without
forgetting who already got what.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from filelock import FileLock, Timeout
from tinydb import Query, TinyDB

from digest.errors import CycleLockedError, DataDirError, StoreCorruptError, StoreWriteError, describe_os_error
from digest.matching.syntax import RULE_SYNTAX, upgraded_rules
from digest.models import CycleReport, Item, SourceReport, Subscriber
from digest.paths import FOLDED_JOURNAL_FILE, JOURNAL_FILE, LOCK_FILE, STORE_FILE
from digest.state import records
from digest.state.departures import Departure, read_departures, take_departures
from digest.state.files import REPAIR_HINT, BufferedAtomicStorage, keep_copy, remove_stale_temp_files
from digest.state.ledger import Ledger
from digest.state.migrations import RULES_BIND_ONE_WORD, SCHEMA_VERSION, migrate
from digest.state.shape import document_problem, is_iso_date, is_iso_time, shape_problems

CYCLES_KEPT = 200
VOTES_KEPT = 500  # per person: the suggestions read the recent ones, and a flood stays bounded
JOURNAL_SYNC_LINES = 64
JOURNAL_SYNC_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class DeliveryNote:
    """What recording one delivery needs but its time, made before the email is handed over.

    Why apart from :meth:`Store.record_note`: a cycle makes it in the render process, with the
    email, so that between the server's "accepted" and the next send the sender only appends a
    line it has ready (the JSON of a digest's papers is most of the recording's cost).
    """

    email: str  # lower-cased
    items: dict[str, str]  # item id → the date it was listed (ISO)
    journal_head: str  # the journal line's JSON, open, up to where its time goes
    # The items' ordinals by listed date, as the ledger keeps them; None when one had no ordinal
    # yet when the note was made (recording gives it one then).
    ordinals: dict[str, list[int]] | None = None


def delivery_note(email: str, items: Iterable[Item], digest_id: str) -> DeliveryNote:
    key = email.lower()
    by_id = {item.id: item.listed_on.isoformat() for item in items}
    head = json.dumps({"email": key, "items": by_id, "digest": digest_id}, ensure_ascii=False, separators=(",", ":"))
    return DeliveryNote(key, by_id, head[:-1] + ',"at":')


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[Concatenate[Store, _P], _R]) -> Callable[Concatenate[Store, _P], _R]:
    """Run a public method under the store's lock: ``digest serve`` shares one store between web
    threads and the cycle, and a table must not change while another thread reads or writes it."""

    def locked(self: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    locked.__name__, locked.__qualname__, locked.__doc__ = method.__name__, method.__qualname__, method.__doc__
    return locked


_LIVE_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    """A forked child (the render process of :mod:`digest.cycle.render_ahead`) has only the forking thread: a
    lock another thread held at the fork would never be released there, so each store gets a new one."""
    for store in list(_LIVE_STORES):
        store._lock = threading.RLock()
        store._sync_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


class Store:
    """All state digest keeps, with bulk reads and writes and an explicit :meth:`flush`.

    Safe to share between threads: every public method holds :attr:`_lock` (an ``RLock``).
    """

    def __init__(self, data_dir: Path, writable: bool = True) -> None:
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()  # one fsync at a time; see sync_through
        self._deferred = threading.local()  # see deferred_sync
        self._appended = 0  # journal appends so far, and how many of them are fsynced
        self._synced = 0
        _LIVE_STORES.add(self)
        self.data_dir = data_dir
        self.writable = writable
        self.path = data_dir / STORE_FILE
        self.journal_path = data_dir / JOURNAL_FILE
        if writable:
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataDirError(describe_os_error(exc, "create the data directory")) from None
        self._storage: BufferedAtomicStorage | None = None
        self.db = TinyDB(self.path, storage=self._capture_storage)
        self._check_schema()
        assert self._storage is not None
        self._take_tables(self._storage)
        self._journal_unsynced: int = 0
        self._journal_synced_at: float = time.monotonic()
        self._journal: _Journal | None = None  # opened on the first delivery, closed when folded
        # Only how many deliveries the journal holds beyond the store: the ledger has them folded in,
        # and keeping each entry too would hold every digest's item list until the flush.
        self._journal_count: int = 0
        # When the file last folded a journal in: lines older than that (a repair replays the folded
        # journal onto the backup) may carry older bookkeeping; later ones are the latest word.
        self._written_at: str = str(self.db.table("meta").get(doc_id=1).get("written_at") or "")  # type: ignore[union-attr]
        for entry in self._read_journal():
            self._replay(entry)
            self._journal_count += 1
        for email, at in read_departures(data_dir):  # unsubscribes taken while another process wrote
            self.forget_departed(email, at)

    def _take_tables(self, storage: BufferedAtomicStorage) -> None:
        """Five tables live in plain structures, not in TinyDB: the storage hands over the parsed
        documents (no copies), and asks for them back when it writes the file."""
        seen_docs = storage.hand_over("seen", self._seen_documents).values()
        self._seen: dict[str, str] = {d["id"]: d["listed_on"] for d in seen_docs}
        self._ids: list[str] = [""] * len(seen_docs)
        self._ordinal: dict[str, int] = {}
        for d in seen_docs:
            self._ordinal[d["id"]] = d["n"]
            if d["n"] >= len(self._ids):
                self._ids.extend([""] * (d["n"] + 1 - len(self._ids)))
            self._ids[d["n"]] = d["id"]
        del seen_docs
        self._items: dict[str, dict[str, Any]] = {
            d["id"]: d for d in storage.hand_over("items", self._item_documents).values()
        }
        self._subscribers: dict[str, Subscriber] = {
            d["email"]: Subscriber.from_record(d)
            for d in storage.hand_over("subscribers", self._subscriber_documents).values()
        }
        self._ledger: Ledger = Ledger.from_records(storage.hand_over("ledger", self._ledger_documents).values())
        # Looked up by every confirm link and written by every unsubscribe: a dict, not a table scan.
        self._departures: dict[str, str] = {
            d["email"]: d["at"] for d in storage.hand_over("departures", self._departure_documents).values()
        }
        # email → {paper id: (vote, ISO time)}: read per person by the manage page, so by address.
        self._votes: dict[str, dict[str, tuple[int, str]]] = {}
        for d in storage.hand_over("votes", self._vote_documents).values():
            self._votes.setdefault(d["email"], {})[d["paper"]] = (d["vote"], d["at"])

    def _capture_storage(self, path: str) -> BufferedAtomicStorage:
        self._storage = BufferedAtomicStorage(path)
        return self._storage

    def _check_schema(self) -> None:
        """Create a new store at the current version, or upgrade an older one in memory.

        The upgraded store is written at the next flush; before that, the file as it was is kept
        as ``digest.json.v<old>.bak``, so a migration can always be undone by hand.
        """
        assert self._storage is not None
        self._file_schema = SCHEMA_VERSION
        data = self._storage.read()
        if data is None:
            backup = self.path.with_name(self.path.name + ".bak")
            if backup.exists():  # a store that went missing, not a new one: never start over silently
                raise StoreCorruptError(
                    f"store file {self.path} is missing but its backup {backup} is there{REPAIR_HINT}"
                )
            self.db.table("meta").insert({"schema_version": SCHEMA_VERSION, "prune_horizon": None})
            return
        upgraded, old_version = migrate(data, str(self.path))
        self._file_schema = old_version
        problems = shape_problems(upgraded)
        if problems:
            raise StoreCorruptError(
                f"store file {self.path} is not a digest store as written: {'; '.join(problems)}; "
                f"it was left untouched{REPAIR_HINT}"
            )
        if old_version != SCHEMA_VERSION:
            if self.writable:
                keep_copy(self.path, self.path.with_name(f"{self.path.name}.v{old_version}.bak"))
            self._storage.write(upgraded)

    # -- meta ---------------------------------------------------------------------------------
    @property
    @_locked
    def prune_horizon(self) -> date | None:
        value = self.db.table("meta").get(doc_id=1).get("prune_horizon")  # type: ignore[union-attr]
        return date.fromisoformat(value) if value else None

    def _set_meta(self, **values: Any) -> None:
        self.db.table("meta").update(values, doc_ids=[1])

    # -- items --------------------------------------------------------------------------------
    def _ordinal_of(self, item_id: str, listed_on: str) -> int:
        """The item's ordinal, giving it one (and a place in ``seen``) if it has none yet."""
        ordinal = self._ordinal.get(item_id)
        if ordinal is None:
            ordinal = self._ordinal[item_id] = len(self._ids)
            self._ids.append(item_id)
            self._seen.setdefault(item_id, listed_on)
            self._changed()
        return ordinal

    @_locked
    def upsert_items(self, items: Iterable[Item], now: datetime) -> list[Item]:
        """Remember fetched items; return the ones never seen before.

        An item keeps the date it was first listed (a paper listed again on a later day is the same
        item, so it is never "new" twice); counts such as upvotes are refreshed.
        """
        new: list[Item] = []
        stamp = now.isoformat()
        for item in items:
            first = self._seen.get(item.id)
            record = item.to_record()
            if first is None:
                self._seen[item.id] = item.listed_on.isoformat()
                self._ordinal_of(item.id, item.listed_on.isoformat())
                new.append(item)
                record["first_seen"] = stamp
            else:
                record["listed_on"] = first
                record["first_seen"] = self._items.get(item.id, {}).get("first_seen", stamp)
            record["last_seen"] = stamp
            if first is None or item.id in self._items or date.fromisoformat(first) >= (self.prune_horizon or date.min):
                self._items[item.id] = record
        self._changed()
        return new

    @_locked
    def items_listed_between(self, start: date, end: date) -> list[Item]:
        low, high = start.isoformat(), end.isoformat()
        return [Item.from_record(r) for r in self._items.values() if low <= r["listed_on"] <= high]

    @_locked
    def item(self, item_id: str) -> Item | None:
        record = self._items.get(item_id)
        return Item.from_record(record) if record else None

    @_locked
    def items(self, item_ids: Iterable[str]) -> list[Item]:
        """The stored papers among ``item_ids``, in that order (one read for a person's votes)."""
        return [Item.from_record(record) for record in map(self._items.get, dict.fromkeys(item_ids)) if record]

    @property
    @_locked
    def seen_count(self) -> int:
        return len(self._seen)

    # -- subscribers --------------------------------------------------------------------------
    @_locked
    def subscribers(self, active_only: bool = False) -> list[Subscriber]:
        return [s for s in self._subscribers.values() if s.active or not active_only]

    @_locked
    def subscriber(self, email: str) -> Subscriber | None:
        return self._subscribers.get(email.lower())

    def save_subscriber(self, subscriber: Subscriber) -> None:
        """A person's change (subscribe, confirm, new rules, pause, resume): in the journal at once."""
        self.save_subscribers([subscriber])

    @_locked
    def save_subscribers(self, subscribers: Iterable[Subscriber]) -> None:
        """People's changes (an import, say), logged in the journal (fsynced) before this returns, so
        they survive a crash before the next flush and a ``doctor --repair`` from the backup."""
        changed = list(subscribers)
        # One line for the lot: a line torn by a crash or a full disk is skipped whole, so an import
        # is all or nothing in the journal as it is in the store.
        records = [s.to_record() for s in changed]
        entry = {"subscriber": records[0]} if len(records) == 1 else {"subscribers": records}
        self._log([{**entry, "syntax": RULE_SYNTAX}])
        for subscriber in changed:
            self._subscribers[subscriber.email.lower()] = subscriber
        self._changed()

    @_locked
    def record_progress(self, subscribers: Iterable[Subscriber]) -> None:
        """A cycle's bookkeeping (``caught_up_to``, ``last_delivery_at``, ``handled_at``): written at the
        next flush, not logged. Losing it to a repair only makes the ledger filter a few more candidates.

        Only those fields of each *current* record change: rules, pauses and removals made
        while the cycle sent (the web writes into the same store in ``digest serve``) are kept."""
        for subscriber in subscribers:
            key = subscriber.email.lower()
            current = self._subscribers.get(key)
            if current is not None:  # never bring back someone who left meanwhile
                self._subscribers[key] = replace(
                    current,
                    caught_up_to=subscriber.caught_up_to,
                    last_delivery_at=subscriber.last_delivery_at,
                    handled_at=subscriber.handled_at,
                )
        self._changed()

    @_locked
    def remove_subscriber(self, email: str) -> bool:
        """Forget the subscriber but keep their ledger, so re-subscribing never re-sends an item.

        Logged like :meth:`save_subscriber`: a person who left stays gone after a crash or a repair.
        The time goes to ``departures`` (:meth:`departed_at`), whoever asked (web page, one-click,
        CLI), so a confirmation link sent before it cannot subscribe them again.
        """
        key = email.lower()
        at = datetime.now(UTC)
        self._log([{"unsubscribed": key}], at)
        removed = self._subscribers.pop(key, None) is not None
        self._votes.pop(key, None)
        self._note_departure(key, at.isoformat())
        self._changed()
        return removed

    @_locked
    def forget_departed(self, email: str, at: str) -> None:
        """Apply an unsubscribe from ``unsubscribes.pending`` (:mod:`digest.state.departures`) in memory:
        it is durable there already. A subscription made after it (a new sign-up) is kept."""
        key = email.lower()
        current = self._subscribers.get(key)
        when = datetime.fromisoformat(at)
        since = current.subscribed_at if current is not None else None
        if current is not None and (since is None or since.tzinfo is None or when.tzinfo is None or since <= when):
            del self._subscribers[key]
        self._forget_votes(key, at)
        self._note_departure(key, at)
        self._changed()

    @_locked
    def take_departures(self) -> int:
        """Fold the pending unsubscribes into the journal (fsynced) and memory, and delete their
        file. For the lock's holder: before each email it sends, and before it writes the store."""
        if not self.writable:
            return 0
        return take_departures(self.data_dir, self._fold_departures)

    def _fold_departures(self, departures: list[Departure]) -> None:
        self._log([{"unsubscribed": email, "at": at} for email, at in departures])
        for email, at in departures:
            self.forget_departed(email, at)

    @_locked
    def departed_at(self, email: str) -> datetime | None:
        """When ``email`` last unsubscribed, or None (one row per address that ever left)."""
        at = self._departures.get(email.lower())
        return datetime.fromisoformat(at) if at else None

    @_locked
    def departed_count(self) -> int:
        """How many addresses ever unsubscribed (and are not subscribed again)."""
        return sum(1 for email in self._departures if email not in self._subscribers)

    def _note_departure(self, key: str, at: str) -> None:
        previous = self._departures.get(key)
        if previous is None or datetime.fromisoformat(previous) < datetime.fromisoformat(at):
            self._departures[key] = at

    # -- votes -------------------------------------------------------------------------------
    @_locked
    def record_vote(self, email: str, paper: str, vote: int, at: datetime) -> bool:
        """Keep ``email``'s latest vote (+1/-1) on ``paper``, journalled (fsynced) like a rule change.

        False, recording nothing, when the address is not subscribed (a leaver's old email). The
        same vote again writes nothing, so a replayed press cannot grow the journal. At most
        :data:`VOTES_KEPT` per person: the oldest goes first.
        """
        key = email.lower()
        if key not in self._subscribers or vote not in (1, -1) or not paper:
            return False
        mine = self._votes.get(key, {})
        if mine.get(paper, (0, ""))[0] == vote:
            return True
        record = {"email": key, "paper": paper, "vote": vote, "at": at.isoformat()}
        self._log([{"vote": record}], at)
        self._keep_vote(record)
        return True

    def _keep_vote(self, record: dict[str, Any]) -> None:
        mine = self._votes.setdefault(record["email"], {})
        mine.pop(record["paper"], None)  # re-inserted last: the dict stays in the order of the presses
        mine[record["paper"]] = (record["vote"], record["at"])
        while len(mine) > VOTES_KEPT:
            del mine[next(iter(mine))]
        self._changed()

    @_locked
    def votes(self, email: str) -> dict[str, int]:
        """``email``'s votes: paper id → +1 ("more like this") or -1 ("not for me"), oldest first."""
        return {paper: vote for paper, (vote, _) in self._votes.get(email.lower(), {}).items()}

    def _forget_votes(self, key: str, at: str | None) -> None:
        """Drop ``key``'s votes made up to ``at`` (all of them without it): they left then."""
        mine = self._votes.get(key)
        if not mine:
            return
        when = datetime.fromisoformat(at) if at else None
        kept = {p: v for p, v in mine.items() if when is not None and _later(v[1], when)}
        if kept:
            self._votes[key] = kept
        else:
            del self._votes[key]

    # -- delivery ledger ----------------------------------------------------------------------
    @_locked
    def delivered_ids(self, email: str, since: date | None = None) -> set[str]:
        """Ids delivered to ``email``; with ``since``, only among items listed on or after it (cheap)."""
        ordinals = self._ledger.delivered(email.lower(), since.isoformat() if since else "")
        return {self._ids[n] for n in ordinals}

    def delivered_to(self, emails: Sequence[str], since: date) -> dict[str, set[str]]:
        """:meth:`delivered_ids` of several people at once (keys lower-cased)."""
        return {email.lower(): self.delivered_ids(email, since) for email in emails}

    @_locked
    def delivery_note(self, email: str, items: Iterable[Item], digest_id: str) -> DeliveryNote:
        """:func:`delivery_note` with the items' ordinals, looked up and never given: this may run
        in the render process, whose copy of the store is thrown away."""
        note = delivery_note(email, items, digest_id)
        return replace(note, ordinals=self._ordinals_by_day(note.items, give=False))

    def _ordinals_by_day(self, items: dict[str, str], give: bool) -> dict[str, list[int]] | None:
        """The items' ordinals by listed date, as the ledger keeps them. With ``give``, an item
        without one gets one; else the answer is None then."""
        by_day: dict[str, list[int]] = {}
        for item_id, day in items.items():
            ordinal = self._ordinal_of(item_id, day) if give else self._ordinal.get(item_id)
            if ordinal is None:
                return None
            by_day.setdefault(day, []).append(ordinal)
        return by_day

    def _add_to_ledger(self, email: str, items: dict[str, str], ordinals: dict[str, list[int]] | None = None) -> None:
        by_day = ordinals if ordinals is not None else self._ordinals_by_day(items, give=True)
        assert by_day is not None  # given, every item has an ordinal
        self._ledger.add(email, by_day)
        self._changed()

    @_locked
    def record_note(self, note: DeliveryNote, at: datetime) -> None:
        """Durably note that ``note.email`` has ``note.items``, right after the SMTP server accepted
        them, from a note made in advance (:class:`DeliveryNote`, :func:`delivery_note`)."""
        # An ISO time is digits and "-:.+T": a JSON string as it is.
        line = f'{note.journal_head}"{at.isoformat()}"}}\n'
        self._append(line.encode("utf-8"), f"record the email to {note.email} (accepted by the server) in")
        self._journal_unsynced += 1
        if (
            self._journal_unsynced >= JOURNAL_SYNC_LINES
            or time.monotonic() - self._journal_synced_at > JOURNAL_SYNC_SECONDS
        ):
            self._sync_journal()
        self._journal_count += 1
        self._add_to_ledger(note.email, note.items, note.ordinals)

    def _sync_journal(self) -> None:
        """Make the journal's lines durable on disk. Lines only come through :meth:`_append`, which
        opens the journal, and it is closed only after a sync: unsynced lines have it open."""
        if self._synced < self._appended and self._journal is not None:
            self._journal.sync()
        self._synced = self._appended
        self._journal_unsynced = 0
        self._journal_synced_at = time.monotonic()

    @contextmanager
    def deferred_sync(self) -> Iterator[DeferredSync]:
        """People's changes made in this block, by this thread, are journalled but not yet fsynced:
        the caller makes them durable with :meth:`sync_through` after letting go of its locks.

        Why: ``digest serve`` applies each web write (a one-click unsubscribe) under the store's
        lock; an fsync there made every reader wait, and made concurrent writers pay
        one fsync each in a row. Outside the lock, one fsync covers every line appended before it
        started (group commit), and readers never wait for the disk.
        """
        pending = DeferredSync()
        self._deferred.pending = pending
        try:
            yield pending
        finally:
            self._deferred.pending = None

    def sync_through(self, appended: int) -> None:
        """Return once the journal's first ``appended`` lines are on disk (fsynced), without holding
        the store's lock during the fsync: a sync that started later covers earlier lines too."""
        with self._sync_lock:
            with self._lock:
                if self._synced >= appended or self._journal is None:
                    return  # a sync (or the flush that closed the journal, after its sync) did it
                target = self._appended
                # A duplicate, so a flush closing the journal meanwhile cannot leave us a stale number.
                descriptor = os.dup(self._journal.descriptor)
            try:
                os.fsync(descriptor)
            except OSError as exc:
                raise StoreWriteError(describe_os_error(exc, "sync", self.journal_path)) from None
            finally:
                os.close(descriptor)
            with self._lock:
                self._synced = max(self._synced, target)

    def _append(self, data: bytes, doing: str) -> None:
        """Append to the journal: in the OS when this returns, so it survives a crash or kill -9 of this
        process. A write that fails (a full disk) stops what called it with a message."""
        try:
            if self._journal is None:
                self._journal = _Journal(self.journal_path)
            self._journal.append(data)
            self._appended += 1
        except OSError as exc:
            raise StoreWriteError(describe_os_error(exc, doing, self.journal_path)) from None

    def _log(self, entries: list[dict[str, Any]], when: datetime | None = None) -> None:
        """Journal people's changes and fsync them: rare, and each is someone's explicit request."""
        if not entries or not self.writable:  # a snapshot's changes are dropped, never logged
            return
        at = (when or datetime.now(UTC)).isoformat()
        lines = "".join(json.dumps({"at": at, **e}, ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries)
        self._append(lines.encode("utf-8"), "record a subscriber change in")
        self._journal_count += len(entries)
        self._journal_unsynced += len(entries)
        pending: DeferredSync | None = getattr(self._deferred, "pending", None)
        if pending is not None:  # the caller syncs after letting go of the lock (deferred_sync)
            pending.appended = self._appended
            return
        try:
            self._sync_journal()
        except OSError as exc:
            raise StoreWriteError(describe_os_error(exc, "sync", self.journal_path)) from None

    def _replay(self, entry: dict[str, Any]) -> None:
        """Apply one journal entry (a delivery, or a person's change) on top of the store as read."""
        if "subscribers" in entry:
            for record in entry["subscribers"]:
                self._replay({"subscriber": record, "syntax": entry.get("syntax")})
        elif "subscriber" in entry:
            logged = self._logged_subscriber(entry)
            known = self._subscribers.get(logged.email.lower())
            if (
                known is not None and str(entry.get("at", "")) <= self._written_at
            ):  # older than the file: keep the later
                logged = replace(
                    logged,
                    caught_up_to=max_or_none(logged.caught_up_to, known.caught_up_to),
                    last_delivery_at=max_or_none(logged.last_delivery_at, known.last_delivery_at),
                    handled_at=max_or_none(logged.handled_at, known.handled_at),
                )
            self._subscribers[logged.email.lower()] = logged
        elif "vote" in entry:
            self._keep_vote(entry["vote"])
        elif "unsubscribed" in entry:
            self._subscribers.pop(entry["unsubscribed"], None)
            self._forget_votes(entry["unsubscribed"], None)
            if isinstance(entry.get("at"), str) and is_iso_time(entry["at"]):
                self._note_departure(entry["unsubscribed"], entry["at"])
        else:
            self._add_to_ledger(entry["email"], entry["items"])
        self._changed()

    def _logged_subscriber(self, entry: dict[str, Any]) -> Subscriber:
        """A person's journalled record, its rules read as they were written: a line without a
        syntax mark was written by the digest that wrote a file older than schema 4 (``-`` then
        negated the whole phrase after it), and :mod:`digest.state.migrations` did not see it."""
        logged = Subscriber.from_record(entry["subscriber"])
        syntax = entry.get("syntax")
        if not isinstance(syntax, int):
            syntax = RULE_SYNTAX if self._file_schema >= RULES_BIND_ONE_WORD else 1
        rules = upgraded_rules(logged.rules, syntax)
        return logged if rules == list(logged.rules) else replace(logged, rules=tuple(rules))

    def _read_journal(self) -> list[dict[str, Any]]:
        entries = []
        try:
            journal = open(self.journal_path, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            # None yet; or, for a read-only snapshot (a web page), a writer folded it into the store
            # file just after this read that file: the snapshot is a moment old, which is all it claims.
            return []
        with journal:
            for line in journal:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash mid-write: that send is not recorded
                if journal_entry_ok(entry):
                    entries.append(entry)
        return entries

    @_locked
    def prune(self, horizon: date) -> None:
        """Drop ledger entries and item records listed before ``horizon`` (monotonic).

        Items listed before the horizon are never candidates again (see :meth:`candidate_floor`),
        so forgetting that they were delivered cannot make them be delivered twice.
        """
        current = self.prune_horizon
        if current is not None and horizon <= current:
            return
        cut = horizon.isoformat()
        self._ledger.prune(cut)
        self._items = {k: v for k, v in self._items.items() if v["listed_on"] >= cut}
        self._set_meta(prune_horizon=cut)
        self._changed()

    @_locked
    def candidate_floor(self) -> date:
        """The earliest listing date that may still be delivered."""
        return self.prune_horizon or date.min

    # -- sources ------------------------------------------------------------------------------
    def _source_record(self, source: str) -> dict[str, Any]:
        doc = self.db.table("sources").get(Query().name == source)
        return dict(doc) if doc else {"name": source, "failed_days": []}

    @_locked
    def source_states(self) -> list[dict[str, Any]]:
        return sorted((dict(d) for d in self.db.table("sources").all()), key=lambda d: str(d["name"]))

    @_locked
    def failed_days(self, source: str) -> list[date]:
        return [date.fromisoformat(d) for d in self._source_record(source).get("failed_days", [])]

    @_locked
    def fetched_through(self, source: str) -> date | None:
        """The as-of day of the last cycle that fetched ``source``: every day up to it was fetched,
        waits in its failed days, or was given up. The next cycle fetches the days after it.

        A store from before this was kept has only ``last_ok_at`` (a UTC time): its date less a day,
        to be safe whatever the schedule's time zone. None when the source was never fetched.
        """
        return records.fetched_through(self._source_record(source))

    @_locked
    def record_source(
        self,
        report: SourceReport,
        days_failed: Iterable[date],
        at: datetime,
        as_of: date | None = None,
        fetched_through: date | None = None,
        caught_up: tuple[date, date] | None = None,
        lost: Iterable[tuple[date, date, str]] = (),
    ) -> None:
        """Remember what one fetch of ``report.name`` left to do (its failed days) and how it went.

        Also, for the next cycle and ``digest status``: the day it is now fetched through, the days
        the cycle as of ``as_of`` fetched late because digest was not running (``caught_up``, first
        and last), and the last ten runs of days it will never fetch (first, last, why).
        """
        state = records.after_fetch(
            self._source_record(report.name), report, days_failed, at, as_of, fetched_through, caught_up, lost
        )
        self.db.table("sources").upsert(state, Query().name == report.name)

    # -- delivery failures --------------------------------------------------------------------
    @_locked
    def record_failure(self, email: str, reason: str, at: datetime, permanent: bool) -> None:
        """Note that the server refused ``email``'s digest; its items stay pending for the next one."""
        table = self.db.table("failures")
        key = email.lower()
        previous = table.get(Query().email == key)
        table.upsert(records.failure(key, reason, at, permanent, previous), Query().email == key)

    @_locked
    def clear_failure(self, email: str) -> None:
        table = self.db.table("failures")
        if len(table):  # called after every accepted email: nothing to query (or rewrite) when none failed
            table.remove(Query().email == email.lower())

    @_locked
    def failures(self) -> list[dict[str, Any]]:
        return sorted((dict(d) for d in self.db.table("failures").all()), key=lambda d: str(d["email"]))

    @_locked
    def source_state(self, source: str) -> dict[str, Any]:
        """What a source keeps between cycles (a feed's ETag, Last-Modified, fresh-until); empty at first."""
        return dict(self._source_record(source).get("http", {}))

    @_locked
    def set_source_state(self, source: str, state: dict[str, Any]) -> None:
        """Kept in memory and written with the items at the next flush, so the two never disagree."""
        record = self._source_record(source)
        record["http"] = dict(state)
        self.db.table("sources").upsert(record, Query().name == source)

    # -- cycles -------------------------------------------------------------------------------
    @_locked
    def record_cycle(self, report: CycleReport) -> None:
        table = self.db.table("cycles")
        table.insert(report.to_record())
        if len(table) > CYCLES_KEPT:
            oldest = sorted(doc.doc_id for doc in table.all())[: len(table) - CYCLES_KEPT]
            table.remove(doc_ids=oldest)

    @_locked
    def cycles(self, last: int = 10) -> list[dict[str, Any]]:
        return [dict(d) for d in self.db.table("cycles").all()[-last:]]

    # -- persistence --------------------------------------------------------------------------
    @_locked
    def flush(self) -> None:
        """Write every changed table, atomically, and then empty the delivery journal."""
        if not self.writable:
            self._sync_journal()
            return  # a snapshot (dry run, preview): changes stay in memory and are dropped
        try:
            self.take_departures()
            self._sync_journal()
            if self._journal_count:
                self._set_meta(written_at=datetime.now(UTC).isoformat())
            assert self._storage is not None
            self._storage.flush()
        except OSError as exc:
            raise StoreWriteError(
                describe_os_error(exc, "write the store", self.path) + "; nothing recorded was lost"
            ) from None
        if self._journal_count:
            self._close_journal()  # the next delivery starts a new file
            # Keep the folded journal beside the backup (see the module docstring): the backup
            # predates these deliveries, so a restore replays them.
            if self.journal_path.exists():
                os.replace(self.journal_path, self.data_dir / FOLDED_JOURNAL_FILE)
            self._journal_count = 0

    def _changed(self) -> None:
        """One of the tables this class holds changed: the next flush writes the file."""
        assert self._storage is not None
        self._storage.mark_changed()

    def _seen_documents(self) -> Iterator[dict[str, Any]]:
        return ({"id": k, "listed_on": v, "n": self._ordinal[k]} for k, v in self._seen.items())

    def _item_documents(self) -> Iterable[dict[str, Any]]:
        return self._items.values()

    def _subscriber_documents(self) -> Iterator[dict[str, Any]]:
        return (s.to_record() for s in self._subscribers.values())

    def _ledger_documents(self) -> Iterable[dict[str, Any]]:
        return self._ledger.records()

    def _departure_documents(self) -> Iterator[dict[str, Any]]:
        return ({"email": email, "at": at} for email, at in self._departures.items())

    def _vote_documents(self) -> Iterator[dict[str, Any]]:
        return (
            {"email": email, "paper": paper, "vote": vote, "at": at}
            for email, mine in self._votes.items()
            for paper, (vote, at) in mine.items()
        )

    def _close_journal(self) -> None:
        journal, self._journal = self._journal, None
        if journal is not None:
            journal.close()

    @_locked
    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._close_journal()


def _later(at: str, when: datetime) -> bool:
    """Is the ISO time ``at`` after ``when`` (a vote made after a departure, on a new subscription)?"""
    then = datetime.fromisoformat(at)
    if (then.tzinfo is None) != (when.tzinfo is None):
        return False
    return then > when


def max_or_none(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def journal_entry_ok(entry: Any) -> bool:
    """A complete journal line of a kind this digest writes (others are skipped, like torn lines)."""
    if not isinstance(entry, dict):
        return False
    if "subscriber" in entry:
        return document_problem("subscribers", entry["subscriber"]) is None
    if "subscribers" in entry:
        records = entry["subscribers"]
        return isinstance(records, list) and all(document_problem("subscribers", r) is None for r in records)
    if "unsubscribed" in entry:
        return isinstance(entry["unsubscribed"], str) and bool(entry["unsubscribed"])
    if "vote" in entry:
        return document_problem("votes", entry["vote"]) is None
    items = entry.get("items")
    return (
        isinstance(entry.get("email"), str)
        and bool(entry["email"])
        and isinstance(items, dict)
        and all(isinstance(k, str) and k and is_iso_date(v) for k, v in items.items())
    )


def journaled_deliveries(data_dir: Path) -> int:
    """How many deliveries the journals hold (the live one and the one the last flush folded)."""
    count = 0
    for path in (data_dir / JOURNAL_FILE, data_dir / FOLDED_JOURNAL_FILE):
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            count += journal_entry_ok(entry) and "items" in entry
    return count


@dataclass(slots=True)
class DeferredSync:
    """What :meth:`Store.deferred_sync` left to sync: the journal's lines up to ``appended``."""

    appended: int = 0


class _Journal:
    """``deliveries.journal`` open for appending, for as long as deliveries are being recorded.

    Kept open because opening and closing it around every line is a cost per email, in the
    process that sends them. Each line is handed to the kernel with ``write(2)`` on an
    ``O_APPEND`` descriptor (no buffer in this process), so it survives a crash or ``kill -9`` as
    soon as this returns, exactly as the close did before. The descriptor is closed when the
    object is collected, should its store never be closed.
    """

    def __init__(self, path: Path) -> None:
        self.descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self._closer = weakref.finalize(self, os.close, self.descriptor)
        # A line torn by a crash or a full disk must not swallow the next one: start on a fresh line.
        size = os.fstat(self.descriptor).st_size
        self._torn = size > 0 and os.pread(self.descriptor, 1, size - 1) != b"\n"

    def append(self, data: bytes) -> None:
        view = memoryview(b"\n" + data if self._torn else data)
        self._torn = True  # until the whole line is in
        while view:  # a regular file takes it all at once, unless the disk fills up (OSError)
            view = view[os.write(self.descriptor, view) :]
        self._torn = False

    def sync(self) -> None:
        os.fsync(self.descriptor)

    def close(self) -> None:
        self._closer()


@contextmanager
def store_lock(data_dir: Path, wait_seconds: float, stop: threading.Event | None = None) -> Iterator[None]:
    """One writer at a time across processes (a cycle, a CLI change, a web sign-up).

    Each writer reads the store after taking the lock and writes it before releasing it, so no
    writer can overwrite another's change with a stale copy. The lock is the kernel's (flock), so
    a writer killed with ``kill -9`` releases it. Waiting ends early when ``stop`` is set.
    """
    lock = FileLock(str(data_dir / LOCK_FILE))
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            break
        except Timeout:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise CycleLockedError(
                    f"the store in {data_dir} is busy (a digest cycle is probably running; "
                    f"lock {data_dir / LOCK_FILE}); try again when it has finished"
                ) from None
        except OSError as exc:  # read-only, not ours, or not a directory: nothing can be written there
            raise DataDirError(describe_os_error(exc, "use the data directory") + f" (data_dir {data_dir})") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def open_store(
    data_dir: Path, write: bool = True, wait_seconds: float = 60, stop: threading.Event | None = None
) -> Iterator[Store]:
    """The store, locked for writing (and written back on success), or a read-only snapshot."""
    if not write:
        yield Store(data_dir, writable=False)
        return
    with store_lock(data_dir, wait_seconds, stop):
        remove_stale_temp_files(data_dir / STORE_FILE)  # only the lock's holder writes: any temp file is stale
        store = Store(data_dir)
        yield store
        store.close()
