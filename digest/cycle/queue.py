"""``digest scheduler`` and ``digest worker`` on a PostgreSQL store: the cycle queues its digests,
workers render and send them (the SQL: :mod:`digest.state.postgres.queue`).

The scheduler's cycle is today's cycle up to the plan; :func:`enqueue_plan` takes the send stage's
place. Its bookkeeping is the send stage's for what it can know now: those with nothing to send
move on, and a first digest pins its subscriber's horizon at the window (as a first digest that
did not get through does). Everything else moves when a worker has handed the digest over:
the worker records the deliveries, moves ``caught_up_to`` and ``last_delivery_at`` and deletes the
row in one transaction (:class:`Worker`).

Worker, per row: the person's current record (unsubscribed or paused: dropped, their papers stay
pending), papers delivered meanwhile left out (none left: dropped), the relay's limits
(:func:`~digest.state.postgres.queue.take_slot`: a full quota leaves the row waiting), render
(:class:`~digest.cycle.compose.Composer`, as the cycle does), send over the worker's own SMTP
connection. Accepted: recorded and finished. Refused for good (5xx): the failure is recorded and
the row dropped, the papers stay pending for the next cycle. Transient (4xx, a dropped
connection): the row waits and is tried again, :data:`MAX_ATTEMPTS` times, then dropped like a
refusal. Throttled (421 "too many"): the worker slows down (:class:`~digest.mail.quota.Throttle`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from digest.cycle.archive import archive_dir
from digest.cycle.compose import Composer, RenderFailed
from digest.cycle.config import CycleConfig
from digest.cycle.plan import Plan
from digest.cycle.send import SendRun
from digest.errors import (
    DeliveryError,
    PermanentDeliveryError,
    StoreError,
    ThrottledError,
    TransientDeliveryError,
)
from digest.mail.mailer import Mailer, hung_up_on_stop
from digest.mail.quota import Throttle
from digest.models import Digest, DigestEntry, Highlight, Item, RuleMatch, Subscriber
from digest.signing import Signer
from digest.state.backend import StoreBackend
from digest.state.postgres import queue as sql
from digest.state.postgres.store import PostgresStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # transient refusals of one row before it is dropped (its papers stay pending)
QUOTA_RECHECK_SECONDS = 30.0  # a full hour/day quota: look again this often


def digest_record(digest: Digest, receipt: str) -> dict[str, Any]:
    """A planned digest as JSON (the queue's ``digest`` column), with the cycle's coverage line.

    Papers by id: their records are in the ``items`` table already (the fetch wrote them), and a
    day's digests share a few thousand papers; each digest carrying its ~40 papers' abstracts made
    queueing 100,000 digests gigabytes of JSON (``bench/postgres.md``). Nor the person's record:
    the worker reads it, current and locked, when it claims the row (:func:`sql.claim`)."""
    return {
        "as_of": digest.as_of.isoformat(),
        "digest_id": digest.digest_id,
        "notices": list(digest.notices),
        "receipt": receipt,
        "entries": [
            {
                "id": entry.item.id,
                "matches": [
                    [match.rule, [[h.field, h.start, h.end] for h in match.highlights]] for match in entry.matches
                ],
            }
            for entry in digest.entries
        ],
    }


def digest_from_record(
    record: dict[str, Any], subscriber: Subscriber, items: Callable[[list[str]], Mapping[str, Item]] | None = None
) -> tuple[Digest, str]:
    """:func:`digest_record` read back, for ``subscriber``: the digest and its coverage line.
    ``items`` finds papers by id (:class:`ItemCache`); an entry that holds its paper's whole record
    (a row queued by an earlier version) needs none. A paper no longer stored (pruned since) is
    left out: it can never be sent again anyway."""
    wanted = [entry["id"] for entry in record["entries"] if "item" not in entry]
    found = items(wanted) if wanted and items is not None else {}
    entries = []
    for entry in record["entries"]:
        item = Item.from_record(entry["item"]) if "item" in entry else found.get(entry["id"])
        if item is None:
            continue
        matches = tuple(
            RuleMatch(rule, tuple(Highlight(f, s, e) for f, s, e in spans)) for rule, spans in entry["matches"]
        )
        entries.append(DigestEntry(item, matches))
    digest = Digest(
        subscriber,
        entries,
        date.fromisoformat(record["as_of"]),
        record["digest_id"],
        list(record.get("notices") or []),
    )
    return digest, str(record.get("receipt") or "")


def queued_record(digest: Digest, run: SendRun, receipt: str) -> dict[str, Any]:
    """:func:`digest_record`, with the person's rhythm mark before and after queueing: a worker
    that gives up on a temporary refusal hands the day back (:func:`sql.hand_back`), so the next
    tick tries again, as a cycle that sends itself does."""
    record = digest_record(digest, receipt)
    before, stamp = digest.subscriber.handled_at, run.stamp(digest.subscriber)
    if stamp is not None and stamp != before:
        record["handled"] = [before.isoformat() if before else None, stamp.isoformat()]
    return record


def postgres_only(store: StoreBackend) -> PostgresStore:
    if not isinstance(store, PostgresStore):
        raise StoreError("the queue of digest scheduler/worker needs store.url = postgresql://…")
    return store


def enqueue_plan(store: StoreBackend, plan: Plan, run: SendRun, receipt: str) -> int:
    """The scheduler's send stage: queue every planned digest, move on those with nothing to send."""
    pg = postgres_only(store)
    start = run.window_start
    rows = (  # made as they are queued, a batch at a time (:func:`sql.enqueue`)
        sql.NewRow(d.digest_id, d.subscriber.email.lower(), d.as_of, start, queued_record(d, run, receipt))
        for d in plan.digests
    )
    # Everyone planned is handled for their rhythm once queued: the queue sends it, and the next
    # hourly tick must not plan them again that day (digest.cycle.rhythm).
    moved = [
        replace(s, caught_up_to=max(start, s.caught_up_to or start), handled_at=run.stamp(s)) for s in plan.nothing_for
    ]
    moved += [
        replace(d.subscriber, caught_up_to=d.subscriber.caught_up_to or start, handled_at=run.stamp(d.subscriber))
        for d in plan.digests
    ]
    with pg.transaction():  # one commit: no worker sends a row before its progress is written (it
        queued = sql.enqueue(pg, rows)  # would be overwritten by this older progress after the send)
        pg.record_progress(moved)
    log.info("queued %d digest(s) for the workers (%d planned)", queued, len(plan.digests))
    return queued


class ItemCache:
    """The papers a worker's digests show, read from the ``items`` table once per cycle (``as_of``)
    instead of once per digest."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.as_of: date | None = None
        self.items: dict[str, Item] = {}

    def lookup(self, as_of: date) -> Callable[[list[str]], Mapping[str, Item]]:
        if as_of != self.as_of:  # a new cycle: papers may have changed (upvotes, a withdrawal)
            self.as_of, self.items = as_of, {}

        def found(ids: list[str]) -> Mapping[str, Item]:
            missing = [i for i in ids if i not in self.items]
            if missing:
                self.items.update(sql.items_by_id(self.store, missing))
            return self.items

        return found


class Worker:
    """One ``digest worker``: takes queued digests and sends them over its own mailer until ``stop``."""

    def __init__(
        self,
        config: CycleConfig,
        url: str,
        mailer: Mailer,
        now: Callable[[], datetime],
        stop: threading.Event,
        poll_seconds: float = 1.0,
    ) -> None:
        self.config, self.mailer, self.now, self.stop = config, mailer, now, stop
        self.poll_seconds = poll_seconds
        self.store = PostgresStore(url, data_dir=config.data_dir)
        sql.deliver_asynchronously(self.store)
        self.pace = PostgresStore(url, data_dir=config.data_dir)  # its own connection: short transactions
        retry = config.send_retry
        self.throttle = Throttle(config.throttle_budget_seconds, self._wait, retry.initial_delay, retry.max_delay)
        self.throttled = 0
        self.in_transaction = False
        self.owed_wait = 0.0  # a wait the throttle asked for inside the transaction: waited after it
        self.sent = 0
        self.composer = Composer(config, Signer(config.secret_key), now)
        self.items = ItemCache(self.store)
        archive_dir(config.data_dir)

    def close(self) -> None:
        self.store.close()
        self.pace.close()

    def run(self, until_empty: bool = False) -> int:
        """Send until ``stop`` (or, ``until_empty``, until no row is ready); return how many were sent."""
        with hung_up_on_stop(self.mailer, self.stop):
            while not self.stop.is_set():
                wait = self.once()
                if wait is None:
                    if until_empty:
                        break
                    self.stop.wait(self.poll_seconds)
                elif wait > 0:
                    self.stop.wait(wait)
        return self.sent

    def once(self) -> float | None:
        """Handle the oldest ready row: None if there was none, else how long to wait before the next.

        Every wait (the relay's rate and quotas, a slow-down the relay asks for) is outside the
        transaction: its claim locks the person's row, and their unsubscribe must not wait on a pause."""
        # Unsubscribes a web front on this disk kept while the database did not answer (one stat
        # when there are none): applied before anything is sent.
        self.store.take_departures()
        if self.config.limits.any:
            if not sql.has_ready(self.store):  # no slot taken for nothing
                return None
            pause = self._wait_for_a_slot()
            if pause is not None:
                return pause
        self.throttle.pace()
        if self.stop.is_set():
            return 0.0
        self.owed_wait = 0.0
        try:
            with self.store.transaction():
                self.in_transaction = True
                job = sql.claim(self.store)
                if job is None:
                    return None
                return self._handle(job)
        except _Later as later:  # rolled back: the row is as it was, free for any worker
            return later.seconds
        finally:
            self.in_transaction = False

    def _wait(self, seconds: float) -> bool:
        """The throttle's waits; in the transaction only noted (:class:`_Later` waits them after it).
        True when a stop came."""
        if self.in_transaction:
            self.owed_wait += seconds
            return self.stop.is_set()
        return self.stop.wait(seconds)

    def _handle(self, job: sql.Queued) -> float:
        owed = self._still_owed(job)
        if owed is None:
            return 0.0
        digest, subscriber, receipt = owed
        entries = digest.entries
        made = self.composer.with_receipt(receipt).for_sending(self.store, archive_dir(self.config.data_dir))(digest)
        if isinstance(made, RenderFailed):
            line = f"could not render the digest: {made.why}"
            log.error("%s for %s; it is tried again next cycle", line, job.email)
            self.store.record_failure(job.email, line, self.now(), permanent=False)
            self._hand_back(job)
            sql.finish(self.store, job.id)
            return 0.0
        try:
            where = self.mailer.send(made.message)
        except ThrottledError as exc:
            self.throttled += 1
            log.warning("throttled while sending to %s: %s", job.email, exc)
            if not self.throttle.slow_down(self.throttled):
                sql.postpone(self.store, job.id, str(exc), self.config.send_retry.max_delay)
                return 0.0
            raise _Later(self.owed_wait) from None  # not sent: the row as it was, the slow-down waited outside
        except DeliveryError as exc:
            return self._not_delivered(job, exc)
        at = self.now()
        moved = replace(  # the record read under this transaction's lock: current (as record_progress wants)
            subscriber,
            caught_up_to=max(job.window_start, subscriber.caught_up_to or job.window_start),
            last_delivery_at=at,
        )
        sql.finish_sent(self.store, job, moved, made.note.items, at)  # ledger, progress, row: one statement
        self.throttle.accepted()
        self.throttled = 0
        self.sent += 1
        log.info("sent digest %s with %d papers to %s via %s", digest.digest_id, len(entries), job.email, where)
        return 0.0

    def _still_owed(self, job: sql.Queued) -> tuple[Digest, Subscriber, str] | None:
        """The queued digest as it is owed now (their current record, less the papers delivered
        meanwhile), and its receipt; None, with the row finished, when nothing is owed any more."""
        subscriber = Subscriber.from_record(job.subscriber) if job.subscriber is not None else None
        if subscriber is None or not subscriber.active:
            log.info("dropped the queued digest for %s: unsubscribed or paused since", job.email)
            if subscriber is not None:  # paused: resumed the same day, the next tick plans them
                self._hand_back(job)
            sql.finish(self.store, job.id)
            return None
        digest, receipt = digest_from_record(job.digest, subscriber, self.items.lookup(job.as_of))
        done = sql.delivered_among(self.store, job.email, [e.item.id for e in digest.entries])
        entries = [e for e in digest.entries if e.item.id not in done]
        if not entries:
            sql.finish(self.store, job.id)
            return None
        return replace(digest, entries=entries), subscriber, receipt

    def _wait_for_a_slot(self) -> float | None:
        """Keep to the relay's limits, shared by every worker: None to go on (after any pause), or
        how long to wait first when an hour's or a day's quota is full."""
        limits = self.config.limits
        pause, why = sql.take_slot(self.pace, limits.per_second, limits.per_hour, limits.per_day)
        if why is not None:
            log.warning("the queued digests wait: %s", why)
            return QUOTA_RECHECK_SECONDS
        if pause and self.stop.wait(pause):
            return 0.0
        return None

    def _not_delivered(self, job: sql.Queued, exc: DeliveryError) -> float:
        transient = isinstance(exc, TransientDeliveryError) or exc.server_wide
        if self.stop.is_set() and isinstance(exc, TransientDeliveryError):
            raise _Later(0.0)  # hung up on by the stop: not answered, the row stays as it was
        if transient and job.attempts + 1 < MAX_ATTEMPTS:
            delay = min(self.config.send_retry.max_delay, self.config.send_retry.initial_delay * 2**job.attempts)
            log.warning("transient delivery error for %s (attempt %d): %s", job.email, job.attempts + 1, exc)
            sql.postpone(self.store, job.id, str(exc), delay)
            return delay if exc.server_wide else 0.0
        log.error("delivery failed: %s", exc)
        permanent = isinstance(exc, PermanentDeliveryError)
        self.store.record_failure(job.email, str(exc), self.now(), permanent=permanent)
        if exc.server_wide or not permanent:  # not refused for good: the next tick tries again
            self._hand_back(job)
        sql.finish(self.store, job.id)
        return 0.0

    def _hand_back(self, job: sql.Queued) -> None:
        """Their day as it was before this row was queued (:func:`queued_record`), as a cycle that
        sends itself leaves it when a digest did not get through; rows queued before the mark was
        kept in them are left as they are."""
        handled = job.digest.get("handled")
        if handled:
            sql.hand_back(self.store, job.email, before=handled[0], stamp=handled[1])


class _Later(Exception):
    """Leave the row as it was (the transaction is rolled back) and wait ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def run_worker(
    config: CycleConfig,
    url: str,
    mailer: Mailer,
    now: Callable[[], datetime],
    stop: threading.Event,
    until_empty: bool = False,
) -> int:
    """A worker's life: send until ``stop``; return how many it sent."""
    worker = Worker(config, url, mailer, now, stop)
    try:
        with mailer:
            return worker.run(until_empty=until_empty)
    finally:
        with contextlib.suppress(Exception):
            worker.close()
