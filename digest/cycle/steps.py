"""One daily cycle: fetch → diff → match → render → deliver. Every dependency is passed in.

Delivery promises (SPEC.md) and where they are kept:
1. At most once: an item is written to the ledger (journal, handed to the OS; fsynced in groups)
   right after the SMTP server accepted the email, and every candidate is checked against the
   ledger first.
2. Nothing lost: a subscriber's ``caught_up_to`` only moves forward once their digest was handed over,
   so items from a failed send stay candidates; days a source could not fetch, and days no cycle
   ran, are fetched by the next cycle (within ``catchup_days``; older ones are named as lost).
3. First digest: a new subscriber's horizon is the start of the current window.
4. One email per subscriber per cycle, none when nothing matched.

Stopping (SIGTERM): the send loop checks ``stop`` before each email, so the email being handed over
is finished and recorded if the server answers within a few seconds (else it is hung up on and left
pending), the rest stay pending, and the cycle is recorded as stopped early.

Speed: digests are rendered in a child process a few emails ahead of the send loop (``ahead.py``),
so a cycle costs about what handing the emails to the SMTP server costs (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from operator import itemgetter
from pathlib import Path

import httpx

from digest.cycle.coverage import HISTORY_CYCLES, coverage, source_history
from digest.cycle.gc_pause import collector_paused
from digest.cycle.render_ahead import Ahead, timed
from digest.errors import DeliveryError, PermanentDeliveryError, RuleError, TransientDeliveryError
from digest.mail.bounces import verp_address
from digest.mail.mailer import Mailer, SmtpMailer, ThrottledError, UnresponsiveServerError, hung_up_on_stop
from digest.mail.message import DEFAULT_SENDER_NAME, DkimKey, OutgoingEmail, build_message, load_dkim_key
from digest.mail.quota import Limits, SendQuota, Throttle
from digest.mail.render import Links, RenderedDigest, render_digest
from digest.matching.ranking import RankKey, rank_key
from digest.matching.rules import ItemIndex, Matcher, parse_rules
from digest.models import CycleReport, Digest, DigestEntry, Item, RuleMatch, SourceReport, Subscriber
from digest.retry import Retrier
from digest.settings import Settings
from digest.signing import Signer
from digest.sources import Source
from digest.sources.merge import merge_items, with_stored
from digest.state.store import DeliveryNote, Store

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
    from_name: str = DEFAULT_SENDER_NAME,
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
        from_name=from_name,
    )


def catch_up_days(failed: Sequence[date], as_of: date, catchup_days: int) -> tuple[list[date], list[date]]:
    """Split a source's failed days into those fetched again now and those too old to chase."""
    oldest = as_of - timedelta(days=catchup_days)
    keep = [d for d in failed if d > oldest]
    return keep, [d for d in failed if d <= oldest]


@dataclass(frozen=True, slots=True)
class SourceDays:
    """The days a cycle asks one source for (:func:`source_days`), and the days it never will."""

    fetch: list[date]
    caught_up: list[date] = field(default_factory=list)  # no cycle ran then (downtime); fetched now
    not_fetched: list[date] = field(default_factory=list)  # no cycle ran then, and older than catchup_days: lost
    given_up: list[date] = field(default_factory=list)  # failed for catchup_days: lost


def source_days(
    as_of: date, lookback_days: int, catchup_days: int, failed: Sequence[date], fetched_through: date | None
) -> SourceDays:
    """Which days to ask one source for: the look-back window, the days it failed on (retried for
    ``catchup_days``), and every day since the last cycle that fetched it (``fetched_through``),
    so that days when digest was not running are not lost either.

    Never a day after ``as_of``, and nothing ``catchup_days`` or more back but the look-back window
    itself: older days are returned as lost, for the cycle to say so. The first cycle ever
    (``fetched_through`` None) asks for the look-back window alone, and so does a cycle whose
    ``fetched_through`` lies ahead of ``as_of`` (a clock that ran ahead, or a re-run of an old date).
    """
    window = set(window_days(as_of, lookback_days))
    oldest = as_of - timedelta(days=catchup_days)  # this day and earlier are not chased
    owed = sorted({d for d in failed if d <= as_of})  # a day past as_of comes with the look-back in time
    retry, given_up = catch_up_days(owed, as_of, catchup_days)
    missed: list[date] = []
    if fetched_through is not None and fetched_through < as_of:
        start = max(fetched_through, oldest)
        missed = [start + timedelta(days=k) for k in range(1, (as_of - start).days + 1)]
    caught_up = [d for d in missed if d not in window and d not in owed]
    not_fetched: list[date] = []
    if fetched_through is not None and fetched_through < oldest:
        first, last = fetched_through + timedelta(days=1), min(oldest, min(window) - timedelta(days=1))
        not_fetched = [first + timedelta(days=k) for k in range((last - first).days + 1)]
        not_fetched = [d for d in not_fetched if d not in owed]
    return SourceDays(
        fetch=sorted(window | set(retry) | set(caught_up)),
        caught_up=caught_up,
        not_fetched=not_fetched,
        given_up=[d for d in given_up if d not in window],
    )


def day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) runs: 14 lost days read as one range, not a list."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def describe_days(days: Iterable[date]) -> str:
    """'between 2026-10-02 and 2026-10-08', 'on 2026-10-02', or several of them joined."""
    parts = [
        f"on {first.isoformat()}" if first == last else f"between {first.isoformat()} and {last.isoformat()}"
        for first, last in day_ranges(days)
    ]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def lost_days_notices(lost: dict[str, SourceDays], catchup_days: int) -> list[str]:
    """One line per loss (sources with the same days named together), for the digest and the cycle."""
    notices = []
    for kind, why in (
        ("not_fetched", f"digest was not running then, and it goes back at most catchup_days ({catchup_days} days)"),
        ("given_up", f"the source could not be reached for catchup_days ({catchup_days} days)"),
    ):
        by_days: dict[str, list[str]] = {}
        for name, days in lost.items():
            chosen: list[date] = getattr(days, kind)
            if chosen:
                by_days.setdefault(describe_days(chosen), []).append(name)
        for when, names in by_days.items():
            notices.append(f"Papers listed {when} were not fetched from {', '.join(names)} and will not be: {why}.")
    return notices


def lost_ranges(days: SourceDays, catchup_days: int) -> list[tuple[date, date, str]]:
    """The lost days of one source as (first, last, why) runs, as the store keeps them for ``status``."""
    why = {
        "not_fetched": f"digest was not running then; catchup_days is {catchup_days}",
        "given_up": f"unreachable for catchup_days ({catchup_days})",
    }
    return [(first, last, reason) for kind, reason in why.items() for first, last in day_ranges(getattr(days, kind))]


def next_fetched_through(previous: date | None, as_of: date, today: date) -> date:
    """What a source is fetched through after a cycle as of ``as_of``: a re-run of an old date does
    not move it back (the next cycle would fetch again, and call lost, days that were fetched), but
    a day past the real date (a clock that ran ahead) is dropped, or downtime after it would go
    unnoticed until that day came."""
    if previous is None or previous > max(as_of, today):
        return as_of
    return max(previous, as_of)


def prune_anchor(as_of: date, today: date, previous_as_of: date | None) -> date:
    """The latest day a cycle may treat as "now" when it prunes: never past the real date, and never
    past the previous cycle's day either, so one cycle run ahead (``--date``, or a clock that jumped
    forward) cannot move the cut-off for the cycles after it."""
    return min(d for d in (as_of, today, previous_as_of) if d is not None)


def capped_progress(subscribers: Sequence[Subscriber], limit: date) -> list[Subscriber]:
    """Subscribers whose ``caught_up_to`` lies past ``limit`` (the real date), brought back to it.

    Such a date was written by a cycle whose clock ran ahead; left, it would hide days that a later
    catch-up fetches from these subscribers."""
    return [
        replace(s, caught_up_to=limit) for s in subscribers if s.caught_up_to is not None and s.caught_up_to > limit
    ]


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


def waited_longest(digest: Digest) -> float:
    """Sort key: never served first, then by the last delivery, oldest first."""
    last = digest.subscriber.last_delivery_at
    return last.timestamp() if last else 0.0


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
        """One cycle as of ``as_of``.

        Each source is asked for its days (:func:`source_days`): the look-back window, failed days,
        and the days since its last cycle, so downtime loses nothing within ``catchup_days``. A
        subscriber who was served before is offered everything since their ``caught_up_to`` (at or
        before the last cycle's window), so days fetched late reach them; a new one is offered the
        look-back window only (promise 3). ``caught_up_to`` then moves to the window's start, or to
        the earliest day a source still owes if that is earlier. Dates from a clock that ran ahead
        are capped at the real date, and pruning never runs ahead of the real date or of the
        previous cycle's day.
        """
        report = CycleReport(as_of=as_of, started_at=self.now(), dry_run=dry_run, trigger=self.trigger)
        self.clock = StageClock(report)
        today = self.now().date()
        ahead = capped_progress(self.store.subscribers(), max(as_of, today))
        if ahead:
            log.warning("%d subscriber(s) were caught up to a date past today (a clock ran ahead?)", len(ahead))
            self.store.record_progress(ahead)
        with self.clock.stage("fetch"):
            planned = self._fetch(as_of, report)
        window_start = min(window_days(as_of, self.settings.sources.hf_papers.lookback_days))
        owed = [date.fromisoformat(day) for source in report.sources for day in source.days_failed]
        progress_start = min([window_start, *owed])
        with self.clock.stage("match"), collector_paused():
            plan = plan_from_store(self.store, window_start, as_of)
        for problem in plan.rule_errors:
            log.error("skipped subscriber with a bad rule: %s", problem)
            report.errors.append(problem)
        report.matched = sum(len(d.entries) for d in plan.digests)
        notices = self._notices(report, planned)
        for digest in plan.digests:
            digest.notices.extend(notices)
        if not dry_run:
            self._deliver(plan, progress_start, report)
            with self.clock.stage("finish"):
                previous = [date.fromisoformat(c["as_of"]) for c in self.store.cycles(last=1)]
                anchor = prune_anchor(as_of, today, previous[0] if previous else None)
                horizon = anchor - timedelta(days=self.settings.retention_days)
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
    def _fetch(self, as_of: date, report: CycleReport) -> dict[str, SourceDays]:
        """Fetch each source for its days (:func:`source_days`) and store what is new; returns the
        days of each source, for the notices. A feed or arXiv lists what it has now, whatever the
        days: for them a longer list of days costs nothing."""
        lookback, catchup = self.settings.sources.hf_papers.lookback_days, self.settings.catchup_days
        planned: dict[str, SourceDays] = {}
        fetched: list[Item] = []
        for source in self.sources:
            through, failed = self.store.fetched_through(source.name), self.store.failed_days(source.name)
            days = planned[source.name] = source_days(as_of, lookback, catchup, failed, through)
            if days.caught_up:
                why = "when digest was not running"
                log.info("%s: also fetching papers listed %s, %s", source.name, describe_days(days.caught_up), why)
            for lost in lost_days_notices({source.name: days}, catchup):
                log.error("%s", lost)
            result = source.fetch(self.client, days.fetch)
            # Papers, not listings: one listed on two days of the window counts once (as the cycle's total).
            source_report = SourceReport(name=source.name, fetched=len({item.id for item in result.items}))
            if result.failed_days:
                source_report.ok = False
                source_report.error = "; ".join(result.errors)
                source_report.days_failed = [d.isoformat() for d in result.failed_days]
            report.sources.append(source_report)
            if not report.dry_run:
                self.store.record_source(
                    source_report,
                    result.failed_days,
                    self.now(),
                    as_of=as_of,
                    fetched_through=next_fetched_through(through, as_of, self.now().date()),
                    caught_up=(days.caught_up[0], days.caught_up[-1]) if days.caught_up else None,
                    lost=lost_ranges(days, catchup),
                )
            fetched.extend(result.items)
        # One paper, one item: the same id from two sources (or from this cycle and an earlier one).
        precedence = [source.name for source in self.sources]
        fetched = with_stored(merge_items(fetched, precedence), self.store.item, precedence)
        report.fetched = len(fetched)
        new = self.store.upsert_items(fetched, self.now())
        report.new = len(new)
        if not report.dry_run:
            self.store.flush()
        return planned

    receipt = ""  # the coverage line every digest of the cycle ends with; set by _notices

    def _notices(self, report: CycleReport, planned: dict[str, SourceDays]) -> list[str]:
        """The digest's notes: days lost for good (also the cycle's errors, so ``digest run`` and
        ``/healthz`` say it), then sources that were down (their days come later), then sources
        that listed nothing when they usually list papers. Also sets :attr:`receipt`."""
        notices = lost_days_notices(planned, self.settings.catchup_days)
        report.errors.extend(notices)
        for source in report.sources:
            if not source.ok:
                days = ", ".join(source.days_failed)
                notices.append(
                    f"{source.name} could not be reached for {days}, or sent only part of them; its papers "
                    "from those days will come in a later digest."
                )
        before = source_history(self.store.cycles(last=HISTORY_CYCLES))
        asked = {name: days.fetch for name, days in planned.items()}
        found = coverage(report.sources, asked, report.as_of, before, self.settings.sources.arxiv.categories)
        for note in found.notes:
            log.warning("%s", note)
        self.receipt = found.receipt
        return notices + found.notes

    # -- render and deliver -------------------------------------------------------------------
    def links(self, digest: Digest) -> Links:
        return digest_links(self.signer, self.settings.public_url, digest)

    def compose(self, digest: Digest) -> tuple[bytes, OutgoingEmail]:
        """The digest's HTML (ASCII bytes, for the archive or a preview) and its message."""
        links = self.links(digest)
        site = self.settings.site_name
        rendered = render_digest(digest, links, site_name=site, receipt=self.receipt)
        sender = self.settings.sender_name or site
        message = digest_message(
            digest, rendered, links, self.settings.smtp.from_address, self.now(), self.dkim_key, sender
        )
        return rendered.html_bytes(), message

    def _deliver(self, plan: Plan, window_start: date, report: CycleReport) -> None:
        """Hand every planned digest over, within the relay's limits, over ``smtp.connections``.

        Each accepted email is recorded (journal) by the thread that sent it, before that
        connection sends another, so the at-most-once journal stays exact with any number of
        connections. What is not handed over when the loop ends (a stop, a server that does not
        answer, a quota reached, throttling past its budget) stays pending: counted here by what
        was *handled*, the same way whatever ended the loop.
        """
        archive = self.settings.data_dir / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        archive.chmod(0o700)  # each digest names its subscriber: not for other local users to read
        run = _SendRun(
            caught_up=[
                replace(s, caught_up_to=max(window_start, s.caught_up_to or window_start)) for s in plan.nothing_for
            ]
        )
        smtp = self.settings.smtp
        limits = Limits(smtp.max_per_second, smtp.max_per_hour, smtp.max_per_day)
        quota = SendQuota(self.settings.data_dir, limits, lambda: self.now().timestamp(), self.stop.wait)
        self.throttle = Throttle(
            smtp.throttle_budget_seconds,
            self.stop.wait,
            self.settings.retry.initial_delay_seconds,
            self.settings.retry.max_delay_seconds,
        )
        digests = plan.digests
        if limits.counted:  # who waited longest goes first, so a quota serves everyone in turn
            digests = sorted(digests, key=waited_longest)
        total = len(digests)
        mailers = self._connections()
        bounces_to = self.settings.bounces.address
        bounce_key = self.settings.resolved_secret_key() if bounces_to else ""

        def compose_and_archive(digest: Digest) -> tuple[OutgoingEmail, DeliveryNote]:
            """Render, keep the HTML for "view online", build the message and what recording its
            delivery will need (in the render process if any)."""
            html, message = self.compose(digest)
            if bounces_to:  # the envelope sender (Return-Path) names the subscriber, signed (digest.mail.bounces)
                sender = verp_address(bounces_to, bounce_key, digest.subscriber.email)
                message = replace(message, from_address=sender, known_dot_stuffing=message.dot_stuffing)
            (archive / f"{digest.digest_id}.html").write_bytes(html)
            note = self.store.delivery_note(digest.subscriber.email, [e.item for e in digest.entries], digest.digest_id)
            return message, note

        render = timed(compose_and_archive)
        with contextlib.ExitStack() as stack:
            composed = stack.enter_context(Ahead(digests, render, stop=self.stop))
            for mailer in mailers:
                stack.enter_context(hung_up_on_stop(mailer, self.stop))
            workers = _Workers(self, mailers[1:], window_start, report, run) if len(mailers) > 1 else None
            try:
                for position, (digest, ((message, note), render_seconds)) in enumerate(composed, start=1):
                    self.clock.add("render", render_seconds)
                    if self.stop.is_set():
                        run.halt("stop")
                    if run.halted:
                        break
                    if self.progress:
                        self.progress(position, total)
                    if not self.still_wanted(digest.subscriber.email):
                        run.done()
                        continue
                    why = quota.take()
                    if why is None and self.throttle.pace():
                        why = "a stop was requested"
                    if why is not None:
                        run.halt("stop" if self.stop.is_set() else "deferred", why)
                        break
                    if workers is not None:
                        workers.put(digest, message, note)
                    else:
                        self._hand_over(
                            self.mailer, digest, message, note, window_start, report, run, composed.prefetch
                        )
                        if run.halted:
                            break
            finally:
                if workers is not None:
                    workers.finish()
            if run.error is not None:  # as the loop's own connection would have raised it
                raise run.error
        self._account_for_the_rest(total, report, run, quota)
        for name in ("send", "record"):
            if name in self.clock.report.stages:
                self.clock.note_memory(name)
        if composed.child_private_mb:
            self.clock.report.peak_mb["render_process"] = composed.child_private_mb
        # A first digest that did not get through (refused, or left by a stop) still covers this
        # window next time: pin the person's horizon here, or tomorrow's window would skip it.
        handed_over = {s.email for s in run.caught_up}
        run.caught_up += [
            replace(d.subscriber, caught_up_to=window_start)
            for d in plan.digests
            if d.subscriber.email not in handed_over and d.subscriber.caught_up_to is None
        ]
        # Subscribers may have changed while we sent (another process cannot: we hold the lock);
        # only move their bookkeeping forward.
        self.store.record_progress(run.caught_up)

    throttle: Throttle | None = None

    def _connections(self) -> list[Mailer]:
        """The cycle's mailer, and ``smtp.connections - 1`` more like it (SMTP only)."""
        count = self.settings.smtp.connections
        if count <= 1 or not isinstance(self.mailer, SmtpMailer):
            return [self.mailer]
        return [self.mailer, *(SmtpMailer(self.mailer.settings) for _ in range(count - 1))]

    def _account_for_the_rest(self, total: int, report: CycleReport, run: _SendRun, quota: SendQuota) -> None:
        """Name what was not handed over, by why the loop ended; every one of them stays pending."""
        left = total - run.handled
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

    def _hand_over(
        self,
        mailer: Mailer,
        digest: Digest,
        message: OutgoingEmail,
        note: DeliveryNote,
        window_start: date,
        report: CycleReport,
        run: _SendRun,
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
            with run.lock:
                self.clock.add("send", time.perf_counter() - started)
            if self.stop.is_set() and isinstance(exc, TransientDeliveryError):
                # Not retried, or hung up on by the stop: not answered, so it stays pending.
                run.halt("stop")
                return
            with run.lock:
                self._note_failure(digest, exc, report)
                run.handled += 1
                if exc.server_wide:
                    run.connection_failures += 1
            if isinstance(exc, UnresponsiveServerError):  # not tried again this cycle
                run.halt("unresponsive")
            elif run.connection_failures >= ABORT_AFTER_CONSECUTIVE_CONNECTION_FAILURES:
                run.halt("connections")
            return
        sent_at = self.now()
        recorded = time.perf_counter()
        self.store.record_note(note, sent_at)
        self.store.clear_failure(digest.subscriber.email)
        if self.throttle is not None:
            self.throttle.accepted()
        with run.lock:
            self.clock.add("send", recorded - started)
            self.clock.add("record", time.perf_counter() - recorded)
            run.connection_failures = 0
            run.handled += 1
            report.sent += 1
            run.caught_up.append(
                replace(
                    digest.subscriber,
                    caught_up_to=max(window_start, digest.subscriber.caught_up_to or window_start),
                    last_delivery_at=sent_at,
                )
            )
        log.info(
            "sent digest %s with %d papers to %s via %s",
            digest.digest_id,
            len(digest.entries),
            digest.subscriber.email,
            where,
        )

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
                if self.throttle is None or not self.throttle.slow_down(throttled):
                    raise
            except TransientDeliveryError as exc:
                self.send_retrier.charge(time.monotonic() - started)
                if isinstance(exc, UnresponsiveServerError):
                    raise
                retry += 1
                log.warning("transient delivery error for %s: %s", email, exc)
                if not self.send_retrier.pause(retry, f"the digest for {email}"):
                    raise


@dataclass(slots=True)
class _SendRun:
    """What the send loop and its connection threads share: counts, and why sending ended."""

    caught_up: list[Subscriber] = field(default_factory=list)
    handled: int = 0  # sent, refused, or skipped: everything else stays pending
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


class _Workers:
    """``smtp.connections`` senders: the loop's own connection plus one thread per extra mailer.

    The loop hands digests to a queue as short as the number of connections, so none runs far
    ahead of the quota and the stop checks; each thread sends, records and reconnects on its own.
    """

    def __init__(
        self, cycle: Cycle, extra: list[Mailer], window_start: date, report: CycleReport, run: _SendRun
    ) -> None:
        self.run = run
        self.queue: queue.Queue[tuple[Digest, OutgoingEmail, DeliveryNote] | None] = queue.Queue(maxsize=len(extra) + 1)
        self.threads = []
        for number, mailer in enumerate([cycle.mailer, *extra], start=1):

            def work(mailer: Mailer = mailer) -> None:
                while (job := self.queue.get()) is not None:
                    if run.halted or cycle.stop.is_set():
                        continue  # left pending: not handled
                    try:
                        cycle._hand_over(mailer, *job, window_start, report, run)
                    except Exception as exc:  # a store write failed, say: stop, and raise it in the cycle
                        run.error = run.error or exc
                        run.halt("error")
                if mailer is not cycle.mailer:  # the cycle's own is closed by whoever opened it
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
