"""One daily cycle: fetch → diff → match → render → deliver. Every dependency is passed in.

Delivery promises (SPEC.md) and where they are kept:
1. At most once: an item is written to the ledger (journal, fsynced) right after the SMTP server
   accepted the email, and every candidate is checked against the ledger first.
2. Nothing lost: a subscriber's ``caught_up_to`` only moves forward once their digest was handed over,
   so items from a failed send stay candidates; days a source could not fetch are fetched again.
3. First digest: a new subscriber's horizon is the start of the current window.
4. One email per subscriber per cycle, none when nothing matched.

Stopping (SIGTERM): the send loop checks ``stop`` before each email, so the email being handed over
is finished and recorded, the rest stay pending, and the cycle is recorded as stopped early.

Speed: digests are rendered in a child process a few emails ahead of the send loop (``ahead.py``),
so a cycle costs about what handing the emails to the SMTP server costs (bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import logging
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from operator import itemgetter
from pathlib import Path

import httpx

from digest.ahead import Ahead, timed
from digest.collector import collector_paused
from digest.errors import DeliveryError, PermanentDeliveryError, RuleError, TransientDeliveryError
from digest.mailer import Mailer
from digest.merge import merge_items, with_stored
from digest.message import DkimKey, OutgoingEmail, build_message, load_dkim_key
from digest.models import CycleReport, Digest, DigestEntry, Item, RuleMatch, SourceReport, Subscriber
from digest.render import Links, RankKey, RenderedDigest, rank_key, render_digest
from digest.retry import Retrier
from digest.rules import ItemIndex, Matcher, parse_rules
from digest.settings import Settings
from digest.sources import Source
from digest.store import DeliveryNote, Store
from digest.tokens import Signer

log = logging.getLogger(__name__)

ABORT_AFTER_CONSECUTIVE_CONNECTION_FAILURES = 3


@dataclass(slots=True)
class Plan:
    """What a cycle will send: digests to deliver and the subscribers with nothing to send."""

    digests: list[Digest] = field(default_factory=list)
    nothing_for: list[Subscriber] = field(default_factory=list)
    rule_errors: list[str] = field(default_factory=list)


def window_days(as_of: date, lookback_days: int) -> list[date]:
    return [as_of - timedelta(days=k) for k in reversed(range(lookback_days))]


def digest_id(email: str, as_of: date, items: Sequence[Item]) -> str:
    seed = "|".join([email.lower(), as_of.isoformat(), *sorted(i.id for i in items)])
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:20]


def plan_digests(
    subscribers: Sequence[Subscriber],
    items: Sequence[Item],
    delivered: Callable[[str, date], set[str]],
    window_start: date,
    floor: date,
    as_of: date,
) -> Plan:
    """Pure: who gets which items. ``items`` are the candidates from the store (any horizon).

    Each digest is ranked as :func:`rank_entries` ranks it. A paper matched by one rule carries
    the same matches tuple (the matcher's, shared by everyone with that rule) in thousands of
    digests, so its entry and rank key are made once per tuple, not once per subscriber: they
    were most of planning's time.
    """
    plan = Plan()
    live = [i for i in items if not i.withdrawn and i.listed_on <= as_of and i.listed_on >= floor]
    listed_on = [i.listed_on for i in live]
    ids = [i.id for i in live]
    matcher = Matcher(ItemIndex(live))
    # id(matches) → (matches, its entry, its rank key); holding the tuple keeps its id from being reused.
    made: dict[int, tuple[tuple[RuleMatch, ...], DigestEntry, RankKey]] = {}
    for subscriber in subscribers:
        try:
            rules = parse_rules(subscriber.rules)
        except RuleError as exc:
            plan.rule_errors.append(f"{subscriber.email}: {exc}")
            continue
        horizon = max(floor, min(window_start, subscriber.caught_up_to or window_start))
        already = delivered(subscriber.email, horizon)
        chosen = []
        for doc, matches in matcher.match(rules).items():
            if listed_on[doc] < horizon or ids[doc] in already:
                continue
            known = made.get(id(matches))
            if known is None or known[0] is not matches:
                entry = DigestEntry(live[doc], matches)
                known = made[id(matches)] = (matches, entry, rank_key(entry))
            chosen.append(known)
        if not chosen:
            plan.nothing_for.append(subscriber)
            continue
        chosen.sort(key=itemgetter(2))
        ranked = [entry for _, entry, _ in chosen]
        plan.digests.append(
            Digest(subscriber, ranked, as_of, digest_id(subscriber.email, as_of, [e.item for e in ranked]))
        )
    return plan


def digest_links(signer: Signer, base: str, digest: Digest) -> Links:
    """The signed links of one digest: view it online, manage one's rules, unsubscribe."""
    email = digest.subscriber.email
    view_token = signer.sign("digest", email, d=digest.digest_id)
    return Links(
        view_online=f"{base}/digest/{digest.digest_id}?token={view_token}",
        manage=f"{base}/manage?token={signer.sign('manage', email)}",
        unsubscribe=f"{base}/unsubscribe?token={signer.sign('unsubscribe', email)}",
    )


def digest_message(
    digest: Digest,
    rendered: RenderedDigest,
    links: Links,
    from_address: str,
    now: datetime,
    dkim_key: DkimKey | None = None,
) -> OutgoingEmail:
    """The email of one rendered digest, addressed to its subscriber, as a cycle sends it."""
    return build_message(
        rendered,
        digest_id=digest.digest_id,
        from_address=from_address,
        to_address=digest.subscriber.email,
        to_name=digest.subscriber.name,
        unsubscribe_url=links.unsubscribe,
        list_id=f"digest.{from_address.rpartition('@')[2] or 'localhost'}",
        now=now,
        dkim_key=dkim_key,
    )


def catch_up_days(failed: Sequence[date], as_of: date, catchup_days: int) -> tuple[list[date], list[date]]:
    """Split a source's failed days into those fetched again now and those too old to chase."""
    oldest = as_of - timedelta(days=catchup_days)
    keep = [d for d in failed if d > oldest]
    return keep, [d for d in failed if d <= oldest]


def candidate_start(subscribers: Sequence[Subscriber], window_start: date, floor: date) -> date:
    starts = [min(window_start, s.caught_up_to or window_start) for s in subscribers]
    return max(floor, min(starts, default=window_start))


def plan_from_store(store: Store, window_start: date, as_of: date) -> Plan:
    """What a cycle would send now from the items already stored (also ``digest status``'s pending)."""
    floor = store.candidate_floor()
    subscribers = store.subscribers(active_only=True)
    start = candidate_start(subscribers, window_start, floor)
    candidates = store.items_listed_between(start, as_of)
    return plan_digests(subscribers, candidates, store.delivered_ids, window_start, floor, as_of)


class StageClock:
    """Adds up the seconds spent in each stage of a cycle and notes peak memory after each."""

    def __init__(self, report: CycleReport) -> None:
        self.report = report

    @contextmanager
    def stage(self, name: str, note_memory: bool = True) -> Iterator[None]:
        """Time a stage. A stage entered once per email passes ``note_memory=False`` and calls
        :meth:`note_memory` after the loop: the peak is a high-water mark, so one reading after
        the loop tells the same, without reading ``/proc`` twice per email."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.report.stages[name] = self.report.stages.get(name, 0.0) + time.perf_counter() - started
            if note_memory:
                self.note_memory(name)

    def note_memory(self, name: str) -> None:
        self.report.peak_mb[name] = peak_memory_mb()

    def add(self, name: str, seconds: float) -> None:
        """Time spent elsewhere (in the render process) on this cycle's behalf."""
        self.report.stages[name] = self.report.stages.get(name, 0.0) + seconds


def peak_memory_mb() -> float:
    """The process's peak resident memory so far.

    Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``exec`` and so can report the parent's size
    (a benchmark or a test runner that started this process). macOS reports bytes, Linux KiB.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def prune_archive(archive: Path, horizon: date) -> int:
    """Delete archived digests older than ``horizon`` (the retention), so the archive does not grow forever."""
    if not archive.is_dir():
        return 0
    cut = datetime.combine(horizon, datetime.min.time()).timestamp()
    removed = 0
    for path in archive.glob("*.html"):
        try:
            if path.stat().st_mtime < cut:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


class Cycle:
    """Runs one cycle with the dependencies it is given."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        sources: Sequence[Source],
        mailer: Mailer,
        client: httpx.Client,
        now: Callable[[], datetime],
        progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
        send_retrier: Retrier | None = None,
        trigger: str = "manual",
    ) -> None:
        self.settings = settings
        self.store = store
        self.sources = sources
        self.mailer = mailer
        self.client = client
        self.now = now
        self.progress = progress
        self.stop = stop or threading.Event()
        self.send_retrier = send_retrier or Retrier(
            settings.retry.policy(settings.retry.send_budget_seconds), stop=self.stop
        )
        self.trigger = trigger
        self.signer = Signer(settings.resolved_secret_key())
        self.dkim_key = load_dkim_key(settings.dkim, settings.smtp.from_address)

    def run(self, as_of: date, dry_run: bool = False) -> CycleReport:
        report = CycleReport(as_of=as_of, started_at=self.now(), dry_run=dry_run, trigger=self.trigger)
        self.clock = StageClock(report)
        with self.clock.stage("fetch"):
            days = self._fetch(as_of, report)
        window_start = min(days)
        with self.clock.stage("match"), collector_paused():
            plan = plan_from_store(self.store, window_start, as_of)
        for problem in plan.rule_errors:
            log.error("skipped subscriber with a bad rule: %s", problem)
            report.errors.append(problem)
        report.matched = sum(len(d.entries) for d in plan.digests)
        notices = self._notices(report)
        for digest in plan.digests:
            digest.notices.extend(notices)
        if not dry_run:
            self._deliver(plan, window_start, report)
            with self.clock.stage("finish"):
                horizon = as_of - timedelta(days=self.settings.retention_days)
                self.store.prune(horizon)
                prune_archive(self.settings.data_dir / "archive", horizon)
                report.finished_at = self.now()
                self.store.record_cycle(report)
                self.store.flush()
        else:
            report.finished_at = self.now()
            self.dry_run_plan = plan
        return report

    # -- fetch and diff -----------------------------------------------------------------------
    def _fetch(self, as_of: date, report: CycleReport) -> list[date]:
        settings = self.settings.sources.hf_papers
        window = window_days(as_of, settings.lookback_days)
        all_days = set(window)
        fetched: list[Item] = []
        for source in self.sources:
            retry, given_up = catch_up_days(self.store.failed_days(source.name), as_of, self.settings.catchup_days)
            for day in given_up:
                log.error(
                    "%s: giving up on %s: it could not be fetched for %d days (catchup_days)",
                    source.name,
                    day,
                    self.settings.catchup_days,
                )
            days = sorted(set(window) | set(retry))
            all_days.update(days)
            result = source.fetch(self.client, days)
            source_report = SourceReport(name=source.name, fetched=len(result.items))
            if result.failed_days:
                source_report.ok = False
                source_report.error = "; ".join(result.errors)
                source_report.days_failed = [d.isoformat() for d in result.failed_days]
            report.sources.append(source_report)
            if not report.dry_run:
                self.store.record_source(source_report, result.failed_days, self.now())
            fetched.extend(result.items)
        # One paper, one item: the same id from two sources (or from this cycle and an earlier one).
        precedence = [source.name for source in self.sources]
        fetched = with_stored(merge_items(fetched, precedence), self.store.item, precedence)
        report.fetched = len(fetched)
        new = self.store.upsert_items(fetched, self.now())
        report.new = len(new)
        if not report.dry_run:
            self.store.flush()
        return sorted(all_days)

    def _notices(self, report: CycleReport) -> list[str]:
        notices = []
        for source in report.sources:
            if not source.ok:
                days = ", ".join(source.days_failed)
                notices.append(
                    f"{source.name} could not be reached for {days}; its papers from those days will come "
                    "in a later digest."
                )
        return notices

    # -- render and deliver -------------------------------------------------------------------
    def links(self, digest: Digest) -> Links:
        return digest_links(self.signer, self.settings.public_url, digest)

    def compose(self, digest: Digest) -> tuple[bytes, OutgoingEmail]:
        """The digest's HTML (ASCII bytes, for the archive or a preview) and its message."""
        links = self.links(digest)
        rendered = render_digest(digest, links)
        message = digest_message(digest, rendered, links, self.settings.smtp.from_address, self.now(), self.dkim_key)
        return rendered.html_bytes(), message

    def _deliver(self, plan: Plan, window_start: date, report: CycleReport) -> None:
        archive = self.settings.data_dir / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        caught_up: list[Subscriber] = [
            replace(s, caught_up_to=max(window_start, s.caught_up_to or window_start)) for s in plan.nothing_for
        ]
        connection_failures = 0
        total = len(plan.digests)

        def compose_and_archive(digest: Digest) -> tuple[OutgoingEmail, DeliveryNote]:
            """Render, keep the HTML for "view online", build the message and what recording its
            delivery will need (in the render process if any)."""
            html, message = self.compose(digest)
            (archive / f"{digest.digest_id}.html").write_bytes(html)
            note = self.store.delivery_note(digest.subscriber.email, [e.item for e in digest.entries], digest.digest_id)
            return message, note

        render = timed(compose_and_archive)
        with Ahead(plan.digests, render) as composed:
            for position, (digest, ((message, note), render_seconds)) in enumerate(composed, start=1):
                self.clock.add("render", render_seconds)
                if self.stop.is_set():
                    report.stopped, report.pending = True, total - position + 1
                    log.warning("stop requested: %d digest(s) left for the next cycle", report.pending)
                    break
                if self.progress:
                    self.progress(position, total)
                if connection_failures >= ABORT_AFTER_CONSECUTIVE_CONNECTION_FAILURES:
                    report.failed += total - position + 1
                    break
                try:
                    with self.clock.stage("send", note_memory=False):
                        # While the server reads this email, the next one comes off the render process's pipe.
                        where = self._send_with_retries(message, digest.subscriber.email, composed.prefetch)
                except DeliveryError as exc:
                    self._note_failure(digest, exc, report)
                    if exc.server_wide:
                        connection_failures += 1
                    continue
                connection_failures = 0
                sent_at = self.now()
                with self.clock.stage("record", note_memory=False):
                    self.store.record_note(note, sent_at)
                    self.store.clear_failure(digest.subscriber.email)
                report.sent += 1
                log.info(
                    "sent digest %s with %d papers to %s via %s",
                    digest.digest_id,
                    len(digest.entries),
                    digest.subscriber.email,
                    where,
                )
                caught_up.append(
                    replace(
                        digest.subscriber,
                        caught_up_to=max(window_start, digest.subscriber.caught_up_to or window_start),
                        last_delivery_at=sent_at,
                    )
                )
        for name in ("send", "record"):
            if name in self.clock.report.stages:
                self.clock.note_memory(name)
        if composed.child_private_mb:
            self.clock.report.peak_mb["render_process"] = composed.child_private_mb
        # A first digest that did not get through (refused, or left by a stop) still covers this
        # window next time: pin the person's horizon here, or tomorrow's window would skip it.
        handed_over = {s.email for s in caught_up}
        caught_up += [
            replace(d.subscriber, caught_up_to=window_start)
            for d in plan.digests
            if d.subscriber.email not in handed_over and d.subscriber.caught_up_to is None
        ]
        # Subscribers may have changed while we sent (another process cannot: we hold the lock);
        # only move their bookkeeping forward.
        self.store.save_subscribers(caught_up)

    def _note_failure(self, digest: Digest, exc: DeliveryError, report: CycleReport) -> None:
        report.failed += 1
        if isinstance(exc, PermanentDeliveryError) and not exc.server_wide:
            report.refused += 1
        report.errors.append(str(exc))
        log.error("delivery failed: %s", exc)
        self.store.record_failure(
            digest.subscriber.email, str(exc), self.now(), permanent=isinstance(exc, PermanentDeliveryError)
        )

    def _send_with_retries(
        self, message: OutgoingEmail, email: str, while_waiting: Callable[[], None] | None = None
    ) -> str:
        """Hand ``message`` over, retrying transient refusals (4xx, dropped connections) with backoff.

        The mailer reconnects by itself after a dropped connection. A permanent refusal (5xx) is
        not retried: it is this address's problem, and the loop moves on to the others.
        """
        retry = 0
        while True:
            try:
                return self.mailer.send(message, while_waiting)
            except TransientDeliveryError as exc:
                retry += 1
                log.warning("transient delivery error for %s: %s", email, exc)
                if not self.send_retrier.pause(retry, f"the digest for {email}"):
                    raise
