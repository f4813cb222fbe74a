"""``digest serve``: the cycle on a schedule (APScheduler) and the web pages (uvicorn), in one process.

Two jobs share one lock, so their cycles never overlap: the cycle at ``schedule.cron`` (as ever:
it always runs, for ``/healthz``), and an hourly tick that runs a cycle only when someone with
email is due by their own rhythm (:mod:`digest.cycle.rhythm`): their local hour has come and no
cycle has handled that day's (or week's) digest. A tick with nobody due reads the in-memory list
of subscribers and nothing else. Each cycle fetches (the sources keep their checkpoints), so a
person served at 18:00 gets what was listed since the morning's cycle.

The main thread owns the signals: SIGTERM/SIGINT set one stop event. The running cycle sees it
(retry waits end, the send loop stops after the email being handed over and records it), uvicorn
is told to exit, the scheduler is shut down waiting for that cycle, and ``serve`` returns, so the
process exits 0 within a few seconds. uvicorn therefore runs in a worker thread, where it installs
no signal handlers of its own.

On start, if a cycle was recorded before but none succeeded since the last scheduled time (the
container was stopped, the machine was off, or the last cycle failed), one runs at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from digest.clock import cron_trigger, last_fire, utc_now
from digest.cycle.rhythm import Due, Slots
from digest.cycle.run import run_once
from digest.cycle.schedule import cycle_left_traces, needs_catch_up
from digest.errors import DigestError
from digest.mail.mailer import Mailer
from digest.models import CycleReport, Subscriber
from digest.ops.signals import announce_stop, stop_on_signals
from digest.ops.status import format_time
from digest.settings import Settings
from digest.sources import Source
from digest.state.backend import open_backend
from digest.state.keeper import StoreKeeper
from digest.state.store import CYCLES_KEPT, Store, journaled_deliveries
from digest.web.app import create_app

log = logging.getLogger(__name__)

CYCLE_JOB_ID = "daily-cycle"
TICK_JOB_ID = "rhythm-tick"
HOURLY = "0 * * * *"  # in UTC: every hour exists there, on DST nights too
LOCK_WAIT_SECONDS = 600
WEB_STOP_SECONDS = 5.0


class CycleJob:
    """The scheduler's jobs: the cycle at ``schedule.cron`` (``__call__``) and the hourly
    :meth:`tick`; errors are logged, never raised into the scheduler. ``now``, ``sources`` and
    ``mailer`` are the real ones unless a test passes its own (a fake clock across DST nights)."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        catch_up_first: bool = False,
        keeper: StoreKeeper | None = None,
        now: Callable[[], datetime] = utc_now,
        sources: Sequence[Source] | None = None,
        mailer: Mailer | None = None,
        cycle: Callable[..., CycleReport | None] = run_once,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.catch_up_first = catch_up_first
        self.keeper = keeper
        self.now = now
        self.sources = sources
        self.mailer = mailer
        self.schedule = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
        self.lock = threading.Lock()  # one cycle at a time in this process, whichever job started it
        self.slots = Slots(self.schedule)  # each rhythm's latest slot, across ticks (under the lock)
        self.cycle = cycle  # ``digest scheduler``: the queueing cycle of digest.ops.roles

    def __call__(self) -> None:
        """The cycle at ``schedule.cron``: always runs. A catch-up at start serves everyone daily on
        the schedule, as it always did; everyone else as their rhythm says."""
        with self.lock:
            trigger = "catch-up" if self.catch_up_first else "scheduled"
            forced, self.catch_up_first = self.catch_up_first, False
            if not self.stop.is_set():
                chosen = Due(self.now(), self.schedule, "all" if forced else "due", self.slots)
                self.run(trigger, chosen)

    def tick(self) -> None:
        """The hourly tick: a cycle only if someone who gets email is due now by their own rhythm
        (people daily on the schedule are the cron cycle's, as before: see :class:`Due`)."""
        with self.lock:
            due = Due(self.now(), self.schedule, "none", self.slots)
            if self.stop.is_set() or not due.wanting_email(self.subscribers()):
                return
            self.run("hourly", due)

    def subscribers(self) -> list[Subscriber]:
        """The subscribers as they are now: the shared in-memory store's (``serve``), else the store's
        (the file, or PostgreSQL for ``digest scheduler``)."""
        if self.keeper is not None:
            return self.keeper.read(lambda store: store.subscribers(active_only=True))
        with open_backend(self.settings.store.url, self.settings.data_dir, write=False) as store:
            return store.subscribers(active_only=True)

    def run(self, trigger: str, due: Due) -> None:
        log.info("cycle starting", extra={"fields": {"trigger": trigger}})
        zone = self.schedule.zone
        try:
            report = self.cycle(
                self.settings,
                as_of=due.now.astimezone(zone).date(),
                sources=self.sources,
                mailer=self.mailer,
                lock_wait_seconds=LOCK_WAIT_SECONDS,
                stop=self.stop,
                trigger=trigger,
                keeper=self.keeper,
                due=due,
            )
        except DigestError as exc:
            log.error("%s cycle failed: %s", trigger, exc)
            return
        except Exception:
            log.exception("%s cycle crashed", trigger)
            return
        if report is None:
            log.info("%s cycle skipped: another scheduler ran it", trigger)
            return
        record = report.to_record()
        fields = {k: record[k] for k in ("trigger", "as_of", "fetched", "new", "matched", "sent", "failed", "ok")}
        log.log(
            logging.INFO if report.ok else logging.WARNING, "cycle done: %s", report.summary(), extra={"fields": fields}
        )


def make_scheduler(
    settings: Settings,
    stop: threading.Event,
    catch_up: bool,
    keeper: StoreKeeper | None = None,
    cycle: Callable[..., CycleReport | None] = run_once,
) -> BackgroundScheduler:
    trigger = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
    scheduler = BackgroundScheduler(timezone=settings.schedule.timezone)
    extra = {"next_run_time": utc_now()} if catch_up else {}
    job = CycleJob(settings, stop, catch_up_first=catch_up, keeper=keeper, cycle=cycle)
    scheduler.add_job(
        job,
        trigger,
        id=CYCLE_JOB_ID,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.schedule.misfire_grace_seconds,
        **extra,
    )
    # Without a catch-up, a tick at start serves whoever's hour passed while the service was down.
    scheduler.add_job(
        job.tick,
        cron_trigger(HOURLY, "UTC"),
        id=TICK_JOB_ID,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.schedule.misfire_grace_seconds,
        **({} if catch_up else {"next_run_time": utc_now()}),
    )
    return scheduler


def must_catch_up(settings: Settings) -> bool:
    """Read the store once at start-up: a damaged store stops ``serve`` here, with its path.

    With no cycle recorded, the traces of one killed before its end (fetched sources, papers, a
    delivery journal) count as a failed cycle, so a killed first-ever cycle is caught up too.
    """
    store = Store(settings.data_dir, writable=False)
    cycles = store.cycles(last=CYCLES_KEPT)
    unrecorded = not cycles and cycle_left_traces(
        store.source_states(),
        store.seen_count,
        journaled_deliveries(settings.data_dir),
    )
    trigger = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
    return needs_catch_up(cycles, last_fire(trigger, utc_now()), unrecorded_cycle=unrecorded)


def start_web(
    settings: Settings, stop: threading.Event, keeper: StoreKeeper | None = None
) -> tuple[uvicorn.Server, threading.Thread]:
    """uvicorn in a thread; without ``keeper``, the app keeps its own (``digest web``: PostgreSQL)."""
    config = uvicorn.Config(
        create_app(settings, keeper=keeper),
        host=settings.web.host,
        port=settings.web.port,
        log_config=None,  # uvicorn's records go through digest's structured logging
        access_log=settings.web.access_log,  # tokens redacted: digest.web.access_log.TokenRedactingFilter
        # The app reads X-Forwarded-For itself, and only from web.trusted_proxies: uvicorn's default
        # would believe it from any client on 127.0.0.1 (FORWARDED_ALLOW_IPS), e.g. a direct one.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise DigestError(
                f"cannot serve the web pages on {settings.web.host}:{settings.web.port} "
                "(is the port in use? set web.port); see the log above"
            )
        if stop.wait(0.05):
            break
    return server, thread


def serve(settings: Settings) -> None:
    # The stop is heard from the first step: a SIGTERM while start-up reads the store (seconds at
    # 10,000 subscribers) ends the process cleanly once that read returns.
    with stop_on_signals(partial(announce_stop, log=log)) as stop:
        catch_up = must_catch_up(settings)
        # One store in memory, shared by the pages, /healthz and the cycle (see digest.state.keeper);
        # read now, so that the first request does not pay for it.
        keeper = StoreKeeper(settings.data_dir)
        keeper.store()
        if stop.is_set():
            keeper.close()
            log.info("stopped before the service started")
            return
        server, web = start_web(settings, stop, keeper)
        scheduler = make_scheduler(settings, stop, catch_up, keeper)
        scheduler.start()
        job = scheduler.get_job(CYCLE_JOB_ID)
        log.info(
            "serving on http://%s:%d; %s",
            settings.web.host,
            settings.web.port,
            "catching up now: the last scheduled cycle was missed or failed"
            if catch_up
            else f"next cycle at {format_time(job.next_run_time, settings.schedule.timezone) if job else '?'}",
        )
        try:
            while not stop.wait(0.5):
                if not web.is_alive():
                    log.error("the web server stopped; stopping")
                    stop.set()
        finally:
            server.should_exit = True
            scheduler.shutdown(wait=True)
            web.join(WEB_STOP_SECONDS)
            keeper.close()  # folds the web's journalled changes into the store file
    log.info("stopped cleanly")
