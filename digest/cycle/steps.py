"""One daily cycle: fetch → diff → match → render → deliver, in order. Every dependency is passed in.

Delivery promises (SPEC.md) and where they are kept:
1. At most once: an item is written to the ledger (journal, handed to the OS; fsynced in groups)
   right after the SMTP server accepted the email, and every candidate is checked against the
   ledger first (:mod:`digest.cycle.send`, :mod:`digest.cycle.plan`).
2. Nothing lost: a subscriber's ``caught_up_to`` only moves forward once their digest was handed over,
   so items from a failed send (or a digest that failed to render) stay candidates; days a source
   could not fetch, and days no cycle ran, are fetched by the next cycle (within ``catchup_days``;
   older ones are named as lost: :mod:`digest.cycle.days`).
3. First digest: a new subscriber's horizon is the start of the current window.
4. One email per subscriber per cycle, none when nothing matched.

Stopping (SIGTERM): the send loop checks ``stop`` before each email, so the email being handed over
is finished and recorded if the server answers within a few seconds (else it is hung up on and left
pending), the rest stay pending, and the cycle is recorded as stopped early.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

import httpx

from digest.cycle.archive import archive_dir, prune_archive
from digest.cycle.compose import Composer
from digest.cycle.config import CycleConfig
from digest.cycle.days import capped_progress, prune_anchor, window_days
from digest.cycle.fetch import fetch_sources
from digest.cycle.gc_pause import collector_paused
from digest.cycle.measure import StageClock
from digest.cycle.notices import digest_notices
from digest.cycle.plan import Plan, plan_from_store, plan_in_slices
from digest.cycle.send import Sender, SendRun
from digest.mail.mailer import Mailer
from digest.models import CycleReport, Subscriber
from digest.paths import ARCHIVE_DIR
from digest.retry import Retrier
from digest.signing import Signer
from digest.sources import Source
from digest.state.backend import StoreBackend

log = logging.getLogger(__name__)


WEEK_DAYS = 7
QUEUE_SLICE = 2000  # subscribers ``digest scheduler`` plans and queues at a time (:meth:`Cycle._queue`)


def kept_days(config: CycleConfig, subscribers: Sequence[Subscriber]) -> int:
    """How many days of papers a prune keeps: ``retention_days``, and never less than a weekly
    person's week plus the look-back window, so their papers are still there on their day."""
    if any(s.frequency == "weekly" for s in subscribers):
        return max(config.retention_days, WEEK_DAYS + config.lookback_days)
    return config.retention_days


class Cycle:
    """Runs one cycle with the dependencies it is given."""

    def __init__(
        self,
        config: CycleConfig,
        store: StoreBackend,
        sources: Sequence[Source],
        mailer: Mailer,
        client: httpx.Client,
        now: Callable[[], datetime],
        progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
        send_retrier: Retrier | None = None,
        trigger: str = "manual",
        enqueue: Callable[[StoreBackend, Plan, SendRun, str], int] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.sources = sources
        self.mailer = mailer
        self.client = client
        self.now = now
        self.progress = progress
        self.stop = stop or threading.Event()
        self.send_retrier = send_retrier or Retrier(config.send_retry, stop=self.stop)
        self.trigger = trigger
        self.enqueue = enqueue  # ``digest scheduler``: queue the digests for the workers instead of sending
        self.composer = Composer(config, Signer(config.secret_key), now)

    def run(
        self,
        as_of: date,
        dry_run: bool = False,
        select: Callable[[Subscriber], bool] | None = None,
        handled_at: datetime | None = None,
    ) -> CycleReport:
        """One cycle as of ``as_of``, for the subscribers ``select`` picks (everyone if None): those
        whose digest is due (:mod:`digest.cycle.rhythm`); each one handled is stamped ``handled_at``.

        A subscriber who was served before is offered everything since their ``caught_up_to`` (at or
        before the last cycle's window), so days fetched late reach them; a new one is offered the
        look-back window only (promise 3). ``caught_up_to`` then moves to the window's start, or to
        the earliest day a source still owes if that is earlier. Dates from a clock that ran ahead
        are capped at the real date, and pruning never runs ahead of the real date or of the
        previous cycle's day.
        """
        report = CycleReport(as_of=as_of, started_at=self.now(), dry_run=dry_run, trigger=self.trigger)
        clock = StageClock(report)
        today = self.now().date()
        ahead = capped_progress(self.store.subscribers(), max(as_of, today))
        if ahead:
            log.warning("%d subscriber(s) were caught up to a date past today (a clock ran ahead?)", len(ahead))
            self.store.record_progress(ahead)
        with clock.stage("fetch"):
            planned = fetch_sources(self.store, self.sources, self.client, self.config, self.now, as_of, report)
        window_start = min(window_days(as_of, self.config.lookback_days))
        owed = [date.fromisoformat(day) for source in report.sources for day in source.days_failed]
        progress_start = min([window_start, *owed])
        run = SendRun(report, progress_start, handled_at)
        if self.enqueue is not None and not dry_run:
            notices, receipt = digest_notices(self.store, report, planned, self.config)
            self.composer = self.composer.with_receipt(receipt)
            self._queue(self.enqueue, (window_start, as_of), select, notices, run, clock)
        else:
            with clock.stage("match"), collector_paused():
                plan = plan_from_store(self.store, window_start, as_of, select)
            self._take_plan(plan, report)
            notices, receipt = digest_notices(self.store, report, planned, self.config)
            self.composer = self.composer.with_receipt(receipt)
            for digest in plan.digests:
                digest.notices.extend(notices)
            if dry_run:
                report.finished_at = self.now()
                return report
            self._deliver(plan, run, clock)
        with clock.stage("finish"):
            self._finish(as_of, today, report)
        return report

    @staticmethod
    def _take_plan(plan: Plan, report: CycleReport) -> None:
        """The plan's rule errors and matches, into the cycle's report."""
        for problem in plan.rule_errors:
            log.error("a stored rule does not parse (left out of the digest): %s", problem)
            report.errors.append(problem)
        report.matched += sum(len(d.entries) for d in plan.digests)

    def _queue(
        self,
        enqueue: Callable[[StoreBackend, Plan, SendRun, str], int],
        window: tuple[date, date],
        select: Callable[[Subscriber], bool] | None,
        notices: list[str],
        run: SendRun,
        clock: StageClock,
    ) -> None:
        """``digest scheduler``: plan and queue :data:`QUEUE_SLICE` subscribers at a time
        (:func:`~digest.cycle.plan.plan_in_slices`): one slice's digests in memory, and the workers
        sending the first slice while the next is planned."""
        slices = plan_in_slices(self.store, *window, select, QUEUE_SLICE)
        while True:
            with clock.stage("match"), collector_paused():
                plan = next(slices, None)
            if plan is None:
                return
            self._take_plan(plan, run.report)
            for digest in plan.digests:
                digest.notices.extend(notices)
            # Paused here too: a slice's records are small lists by the hundred thousand, none in a
            # cycle, and with them alive the collector's passes re-walked the whole store (a quarter
            # of the scheduler's CPU at 10,000: bench/postgres.md, "late"). In an all-in-one
            # process, others' cyclic garbage waits at most one slice's queueing (about 1.5 s).
            with clock.stage("send"), collector_paused():
                enqueue(self.store, plan, run, self.composer.receipt)

    def _deliver(self, plan: Plan, run: SendRun, clock: StageClock) -> None:
        """Render and send every planned digest (:mod:`digest.cycle.send`)."""
        sender = Sender(
            self.config, self.store, self.mailer, self.now, clock, self.stop, self.send_retrier, self.progress
        )
        work = self.composer.for_sending(self.store, archive_dir(self.config.data_dir))
        sender.deliver(plan.digests, plan.nothing_for, run, work)

    def _finish(self, as_of: date, today: date, report: CycleReport) -> None:
        """Prune the store and the archive to the retention, and record the cycle."""
        previous = [date.fromisoformat(c["as_of"]) for c in self.store.cycles(last=1)]
        anchor = prune_anchor(as_of, today, previous[0] if previous else None)
        horizon = anchor - timedelta(days=kept_days(self.config, self.store.subscribers(active_only=True)))
        self.store.prune(horizon)
        prune_archive(self.config.data_dir / ARCHIVE_DIR, horizon)
        report.finished_at = self.now()
        self.store.record_cycle(report)
        self.store.flush()
