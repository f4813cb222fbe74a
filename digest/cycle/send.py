"""The send stage: hand every planned digest over, within the relay's limits, and record each one.

Each accepted email is recorded (journal) by the thread that sent it, before that connection
sends another, so the at-most-once journal stays exact with any number of connections
(``smtp.connections``). What is not handed over when the loop ends (a stop, a server that does
not answer, a quota reached, throttling past its budget) stays pending: counted by what was
*handled*, the same way whatever ended the loop. A digest that could not be rendered is a failure
for its subscriber alone (:class:`digest.cycle.compose.RenderFailed`): nothing is marked
delivered, their papers stay pending, and the loop goes on with the others.

Digests are rendered in a child process a few emails ahead of the loop
(:mod:`digest.cycle.render_ahead`), so a cycle costs about what handing the emails over costs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from digest.cycle.compose import Composed, RenderFailed
from digest.cycle.config import CycleConfig
from digest.cycle.measure import StageClock
from digest.cycle.render_ahead import Ahead, timed
from digest.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ThrottledError,
    TransientDeliveryError,
    UnresponsiveServerError,
)
from digest.mail.mailer import Mailer, SmtpMailer, hung_up_on_stop
from digest.mail.message import OutgoingEmail
from digest.mail.quota import SendQuota, Throttle
from digest.models import CycleReport, Digest, Subscriber
from digest.retry import Retrier
from digest.state.backend import StoreBackend
from digest.state.store import DeliveryNote

log = logging.getLogger(__name__)

ABORT_AFTER_CONSECUTIVE_CONNECTION_FAILURES = 3


def waited_longest(digest: Digest) -> float:
    """Sort key: never served first, then by the last delivery, oldest first."""
    last = digest.subscriber.last_delivery_at
    return last.timestamp() if last else 0.0


@dataclass(slots=True)
class SendRun:
    """What the send loop and its connection threads share: counts, and why sending ended."""

    report: CycleReport
    window_start: date  # where the caught-up subscribers' ``caught_up_to`` moves
    handled_at: datetime | None = None  # stamped on everyone whose digest this cycle handled (rhythm)
    caught_up: list[Subscriber] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # refused for good (5xx): handled, papers still pending
    handled: int = 0  # sent, refused, failed to render, or skipped: everything else stays pending
    connection_failures: int = 0
    reason: str | None = None  # stop, unresponsive, connections, deferred, error
    why: str | None = None
    error: Exception | None = None  # raised by a connection thread; the cycle raises it
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def halted(self) -> bool:
        return self.reason is not None

    def halt(self, reason: str, why: str | None = None) -> None:
        with self.lock:
            if self.reason is None:
                self.reason, self.why = reason, why

    def done(self) -> None:
        with self.lock:
            self.handled += 1

    def stamp(self, subscriber: Subscriber) -> datetime | None:
        """The person's ``handled_at`` once this cycle handled their digest."""
        return self.handled_at or subscriber.handled_at


Work = Callable[[Digest], Composed | RenderFailed]


class Sender:
    """Sends one cycle's digests over its mailer (and ``connections - 1`` more like it)."""

    def __init__(
        self,
        config: CycleConfig,
        store: StoreBackend,
        mailer: Mailer,
        now: Callable[[], datetime],
        clock: StageClock,
        stop: threading.Event,
        send_retrier: Retrier,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config, self.store, self.mailer, self.now = config, store, mailer, now
        self.clock, self.stop, self.send_retrier, self.progress = clock, stop, send_retrier, progress
        retry = config.send_retry
        self.throttle = Throttle(config.throttle_budget_seconds, stop.wait, retry.initial_delay, retry.max_delay)

    def deliver(self, digests: Sequence[Digest], nothing_for: Sequence[Subscriber], run: SendRun, work: Work) -> None:
        """Send ``digests`` (each made by ``work``), then move everyone's bookkeeping forward."""
        start = run.window_start
        run.caught_up += [
            replace(s, caught_up_to=max(start, s.caught_up_to or start), handled_at=run.stamp(s)) for s in nothing_for
        ]
        quota = SendQuota(self.config.data_dir, self.config.limits, lambda: self.now().timestamp(), self.stop.wait)
        if self.config.limits.counted:  # who waited longest goes first, so a quota serves everyone in turn
            digests = sorted(digests, key=waited_longest)
        child_mb = self._send_all(digests, work, run, quota)
        self._account_for_the_rest(len(digests), run, quota)
        for name in ("send", "record"):
            if name in self.clock.report.stages:
                self.clock.note_memory(name)
        if child_mb:
            self.clock.report.peak_mb["render_process"] = child_mb
        # A first digest that did not get through (refused, failed, or left by a stop) still covers
        # this window next time: pin the person's horizon here, or tomorrow's window would skip it.
        # One refused for good is handled for their rhythm (not tried again every hour).
        handed_over = {s.email for s in run.caught_up}
        run.caught_up += [
            replace(
                d.subscriber,
                caught_up_to=d.subscriber.caught_up_to or start,
                handled_at=run.stamp(d.subscriber) if d.subscriber.email in run.refused else d.subscriber.handled_at,
            )
            for d in digests
            if d.subscriber.email not in handed_over
            and (d.subscriber.caught_up_to is None or d.subscriber.email in run.refused)
        ]
        # Subscribers may have changed while we sent (another process cannot: we hold the lock);
        # only move their bookkeeping forward.
        self.store.record_progress(run.caught_up)

    def _send_all(self, digests: Sequence[Digest], work: Work, run: SendRun, quota: SendQuota) -> float:
        """The loop over the digests as the render process makes them; returns that process's memory."""
        mailers = self._connections()
        with contextlib.ExitStack() as stack:
            composed = stack.enter_context(Ahead(digests, timed(work), stop=self.stop))
            for mailer in mailers:
                stack.enter_context(hung_up_on_stop(mailer, self.stop))
            workers = _Workers(self, mailers[1:], run) if len(mailers) > 1 else None
            try:
                for position, (digest, (made, render_seconds)) in enumerate(composed, start=1):
                    self.clock.add("render", render_seconds)
                    if not self._may_send(digest, made, position, len(digests), run, quota):
                        if run.halted:
                            break
                        continue
                    assert isinstance(made, Composed)
                    if workers is not None:
                        workers.put(digest, made.message, made.note)
                        continue
                    self.hand_over(self.mailer, digest, made.message, made.note, run, composed.prefetch)
                    if run.halted:
                        break
            finally:
                if workers is not None:
                    workers.finish()
            if run.error is not None:  # as the loop's own connection would have raised it
                raise run.error
        return composed.child_private_mb

    def _may_send(
        self, digest: Digest, made: Composed | RenderFailed, position: int, total: int, run: SendRun, quota: SendQuota
    ) -> bool:
        """Whether ``digest`` goes out now; when not, ``run.halted`` says whether the loop ends."""
        if self.stop.is_set():
            run.halt("stop")
        if run.halted:
            return False
        if self.progress:
            self.progress(position, total)
        if not self.still_wanted(digest.subscriber.email):
            run.done()
            return False
        if isinstance(made, RenderFailed):
            self._note_render_failure(digest, made, run)
            return False
        why = quota.take()
        if why is None and self.throttle.pace():
            why = "a stop was requested"
        if why is not None:
            run.halt("stop" if self.stop.is_set() else "deferred", why)
            return False
        return True

    def _connections(self) -> list[Mailer]:
        """The cycle's mailer, and ``smtp.connections - 1`` more like it (SMTP only)."""
        count = self.config.connections
        if count <= 1 or not isinstance(self.mailer, SmtpMailer):
            return [self.mailer]
        return [self.mailer, *(SmtpMailer(self.mailer.settings) for _ in range(count - 1))]

    def _account_for_the_rest(self, total: int, run: SendRun, quota: SendQuota) -> None:
        """Name what was not handed over, by why the loop ended; every one of them stays pending."""
        report, left = run.report, total - run.handled
        reason, why = run.reason, run.why
        if left and reason is None and self.stop.is_set():
            reason = "stop"
        if left and reason == "stop":
            report.stopped, report.pending = True, left
            log.warning("stop requested: %d digest(s) left for the next cycle", left)
        elif left and reason in ("unresponsive", "connections"):
            report.failed += left
            log.error("%d more digest(s) left for the next cycle", left)
        elif left and reason == "deferred":
            line = f"{left} digest(s) wait for the next cycle: {why}"
            log.warning("%s", line)
            report.errors.append(line)
            quota.note_waiting(left, why or "", self.now().isoformat())
        quota.close()

    def hand_over(
        self,
        mailer: Mailer,
        digest: Digest,
        message: OutgoingEmail,
        note: DeliveryNote,
        run: SendRun,
        while_waiting: Callable[[], None] | None = None,
    ) -> None:
        """Send one digest (with retries) and record it at once if accepted; any thread."""
        started = time.perf_counter()
        try:
            where = self._send_with_retries(message, digest.subscriber.email, while_waiting, mailer)
        except ThrottledError as exc:
            run.halt("deferred", f"the SMTP server kept asking to slow down ({exc})")
            return
        except DeliveryError as exc:
            self._not_delivered(digest, exc, run, started)
            return
        self._delivered(digest, note, run, started)
        log.info(
            "sent digest %s with %d papers to %s via %s",
            digest.digest_id,
            len(digest.entries),
            digest.subscriber.email,
            where,
        )

    def _delivered(self, digest: Digest, note: DeliveryNote, run: SendRun, started: float) -> None:
        """Record an accepted digest at once (the at-most-once journal), and move its subscriber on."""
        sent_at = self.now()
        recorded = time.perf_counter()
        self.store.record_note(note, sent_at)
        self.store.clear_failure(digest.subscriber.email)
        self.throttle.accepted()
        subscriber = digest.subscriber
        with run.lock:
            self.clock.add("send", recorded - started)
            self.clock.add("record", time.perf_counter() - recorded)
            run.connection_failures = 0
            run.handled += 1
            run.report.sent += 1
            run.caught_up.append(
                replace(
                    subscriber,
                    caught_up_to=max(run.window_start, subscriber.caught_up_to or run.window_start),
                    last_delivery_at=sent_at,
                    handled_at=run.stamp(subscriber),
                )
            )

    def _not_delivered(self, digest: Digest, exc: DeliveryError, run: SendRun, started: float) -> None:
        """A refused or failed send: recorded for the subscriber, unless a stop left it unanswered."""
        with run.lock:
            self.clock.add("send", time.perf_counter() - started)
        if self.stop.is_set() and isinstance(exc, TransientDeliveryError):
            # Not retried, or hung up on by the stop: not answered, so it stays pending.
            run.halt("stop")
            return
        with run.lock:
            self._note_failure(digest, exc, run.report)
            run.handled += 1
            if isinstance(exc, PermanentDeliveryError) and not exc.server_wide:
                run.refused.add(digest.subscriber.email)
            if exc.server_wide:
                run.connection_failures += 1
        if isinstance(exc, UnresponsiveServerError):  # not tried again this cycle
            run.halt("unresponsive")
        elif run.connection_failures >= ABORT_AFTER_CONSECUTIVE_CONNECTION_FAILURES:
            run.halt("connections")

    def still_wanted(self, email: str) -> bool:
        """Checked before every send: in ``digest serve`` the web writes into the store this cycle
        sends from, so an unsubscribe or a pause that arrives mid-cycle stops the person's email.
        Their items stay pending, and their bookkeeping does not move. Unsubscribes another
        process recorded while this one holds the store (:mod:`digest.state.departures`) count too."""
        self.store.take_departures()
        current = self.store.subscriber(email)
        if current is not None and current.active:
            return True
        log.info("skipped the digest for %s: unsubscribed or paused during this cycle", email)
        return False

    def _note_failure(self, digest: Digest, exc: DeliveryError, report: CycleReport) -> None:
        report.failed += 1
        if isinstance(exc, PermanentDeliveryError) and not exc.server_wide:
            report.refused += 1
        report.errors.append(str(exc))
        log.error("delivery failed: %s", exc)
        self.store.record_failure(
            digest.subscriber.email, str(exc), self.now(), permanent=isinstance(exc, PermanentDeliveryError)
        )

    def _note_render_failure(self, digest: Digest, failed: RenderFailed, run: SendRun) -> None:
        """Like a transient refusal: counted and recorded for this subscriber, tried again next cycle."""
        email = digest.subscriber.email
        line = f"could not render the digest for {email}: {failed.why}; it is tried again next cycle"
        log.error("%s", line)
        with run.lock:
            run.report.failed += 1
            run.report.errors.append(line)
            run.handled += 1
            self.store.record_failure(email, f"could not render the digest: {failed.why}", self.now(), permanent=False)

    def _send_with_retries(
        self,
        message: OutgoingEmail,
        email: str,
        while_waiting: Callable[[], None] | None = None,
        mailer: Mailer | None = None,
    ) -> str:
        """Hand ``message`` over, retrying transient refusals (4xx, dropped connections) with backoff.

        The mailer reconnects by itself after a dropped connection. A permanent refusal (5xx) is
        not retried: it is this address's problem, and the loop moves on to the others. Neither is
        a server that did not answer in time (server-wide), and the time a failed attempt took
        counts against the send budget like a wait. A throttling reply ("421 4.7.0 too many")
        waits on the throttle's own budget instead (:class:`digest.mail.quota.Throttle`), and raises
        :class:`ThrottledError` once that is spent.
        """
        chosen = mailer or self.mailer
        retry = throttled = 0
        while True:
            started = time.monotonic()
            try:
                return chosen.send(message, while_waiting)
            except ThrottledError as exc:
                throttled += 1
                log.warning("throttled while sending to %s: %s", email, exc)
                if not self.throttle.slow_down(throttled):
                    raise
            except TransientDeliveryError as exc:
                self.send_retrier.charge(time.monotonic() - started)
                if isinstance(exc, UnresponsiveServerError):
                    raise
                retry += 1
                log.warning("transient delivery error for %s: %s", email, exc)
                if not self.send_retrier.pause(retry, f"the digest for {email}"):
                    raise


class _Workers:
    """``smtp.connections`` senders: the loop's own connection plus one thread per extra mailer.

    The loop hands digests to a queue as short as the number of connections, so none runs far
    ahead of the quota and the stop checks; each thread sends, records and reconnects on its own.
    """

    def __init__(self, sender: Sender, extra: list[Mailer], run: SendRun) -> None:
        self.run = run
        self.queue: queue.Queue[tuple[Digest, OutgoingEmail, DeliveryNote] | None] = queue.Queue(maxsize=len(extra) + 1)
        self.threads = []
        for number, mailer in enumerate([sender.mailer, *extra], start=1):

            def work(mailer: Mailer = mailer) -> None:
                while (job := self.queue.get()) is not None:
                    if run.halted or sender.stop.is_set():
                        continue  # left pending: not handled
                    try:
                        sender.hand_over(mailer, *job, run)
                    except Exception as exc:  # a store write failed, say: stop, and raise it in the cycle
                        run.error = run.error or exc
                        run.halt("error")
                if mailer is not sender.mailer:  # the cycle's own is closed by whoever opened it
                    with contextlib.suppress(Exception):
                        mailer.__exit__(None, None, None)

            thread = threading.Thread(target=work, name=f"smtp-{number}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def put(self, digest: Digest, message: OutgoingEmail, note: DeliveryNote) -> None:
        while not self.run.halted:
            try:
                self.queue.put((digest, message, note), timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
