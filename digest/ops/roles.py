"""The roles of a PostgreSQL deployment as processes: ``digest scheduler``, ``digest worker``,
``digest web``, and ``digest serve`` running all three in one process.

- ``scheduler``: the cycle on ``schedule.cron`` (the scheduling of :mod:`digest.ops.service`),
  queueing its digests for the workers instead of sending them (:mod:`digest.cycle.queue`). Any
  number may run: at each fire time one takes the turn (an advisory lock), sees whether a cycle
  started since that fire time (then it skips), and runs one; the cycle itself also holds the
  cycle lock, so a ``digest run`` by hand never runs beside it.
- ``worker``: takes queued digests (``FOR UPDATE SKIP LOCKED``), renders and sends each over its
  own SMTP connection, records it and finishes the row in one transaction. Any number.
- ``web``: the web pages; every read and change goes to the database (any number of replicas).

SIGTERM/SIGINT stop each as ``digest serve`` stops: the email being handed over is finished and
recorded, the rest wait in the queue.

``scheduler`` and ``worker`` lower their own CPU priority (:func:`yield_to_the_web`).
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from functools import partial
from typing import Any

from digest.clock import cron_trigger, last_fire, utc_now
from digest.cycle.run import cycle_config, run_once
from digest.cycle.schedule import cycle_left_traces, needs_catch_up, started
from digest.errors import DigestError
from digest.mail.mailer import make_mailer
from digest.models import CycleReport
from digest.ops.service import CYCLE_JOB_ID, WEB_STOP_SECONDS, make_scheduler, start_web
from digest.ops.signals import announce_stop, stop_on_signals
from digest.ops.status import format_time
from digest.paths import OUTBOX_DIR
from digest.settings import Settings
from digest.state.backend import open_backend
from digest.state.store import CYCLES_KEPT

log = logging.getLogger(__name__)

BATCH_NICENESS = 10


def yield_to_the_web() -> None:
    """Run this process at a lower CPU priority (``nice`` +10): on a machine that ``digest web``
    shares with the senders, a page no longer waits behind digests being rendered (the web's p99
    during a cycle, 2 cores: 65 → 47 ms, ``bench/postgres.md``); alone on a machine nothing
    changes, as an idle core is used at any priority. Called first, so every thread the process
    starts inherits it. ``nice`` orders processes within one container, not containers."""
    try:
        os.nice(BATCH_NICENESS)
    except OSError as exc:
        log.warning("could not lower this process's CPU priority (%s); it runs at its own", exc)


def _cycles(settings: Settings) -> tuple[list[dict[str, Any]], bool]:
    """The recorded cycles, and whether an unrecorded one left traces (see ``must_catch_up``)."""
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        cycles = store.cycles(last=CYCLES_KEPT)
        traces = not cycles and cycle_left_traces(store.source_states(), store.seen_count, 0)
    return cycles, traces


def must_catch_up(settings: Settings) -> bool:
    """As :func:`digest.ops.service.must_catch_up`, on the PostgreSQL store."""
    cycles, traces = _cycles(settings)
    trigger = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
    return needs_catch_up(cycles, last_fire(trigger, utc_now()), unrecorded_cycle=traces)


def ran_since(cycles: list[dict[str, Any]], fired: datetime | None) -> bool:
    """Whether a cycle (not a dry run, nor an hourly tick's, which serves only people with their
    own rhythm) started at or after the fire time ``fired``."""
    return fired is not None and any(
        not c.get("dry_run") and c.get("trigger") != "hourly" and started(c) >= fired for c in cycles
    )


def queueing_cycle(settings: Settings, **options: Any) -> CycleReport | None:
    """The scheduler's job: a cycle that queues, if this scheduler has the turn and no cycle ran
    since the last fire time; None when it skipped."""
    from digest.state.postgres.queue import scheduler_turn

    with scheduler_turn(settings.store.url) as mine:
        if not mine:
            return None
        # Another scheduler ran this fire's cycle already. Hourly ticks are not deduplicated here:
        # each is planned for those due only, and queueing stamps them handled (digest.cycle.rhythm).
        trigger = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
        hourly = options.get("trigger") == "hourly"
        if not hourly and ran_since(_cycles(settings)[0], last_fire(trigger, utc_now())):
            return None
        return run_once(settings, enqueue=True, **options)


def run_scheduler(settings: Settings, stop: threading.Event, catch_up: bool) -> Any:
    scheduler = make_scheduler(settings, stop, catch_up, cycle=queueing_cycle)
    scheduler.start()
    job = scheduler.get_job(CYCLE_JOB_ID)
    log.info(
        "scheduler: %s",
        "catching up now: the last scheduled cycle was missed or failed"
        if catch_up
        else f"next cycle at {format_time(job.next_run_time, settings.schedule.timezone) if job else '?'}",
    )
    return scheduler


def worker_thread(settings: Settings, stop: threading.Event, crashed: threading.Event) -> threading.Thread:
    """A worker in a thread, sending until ``stop``; a crash of it sets ``crashed`` and ``stop``
    (the process ends, exit 1: a supervisor that restarts on failure restarts it)."""
    from digest.cycle.queue import run_worker

    config = cycle_config(settings)

    def work() -> None:
        try:
            sent = run_worker(
                config, settings.store.url, make_mailer(settings.smtp, settings.data_dir / OUTBOX_DIR), utc_now, stop
            )
            log.info("worker stopped after sending %d digest(s)", sent)
        except Exception:
            log.exception("the worker crashed; stopping")
            crashed.set()
            stop.set()

    thread = threading.Thread(target=work, name="worker", daemon=True)
    thread.start()
    return thread


def scheduler(settings: Settings) -> None:
    # The stop is heard from the first step: a SIGTERM while start-up reads the store ends the
    # process cleanly once that read returns, instead of killing it mid-way.
    with stop_on_signals(partial(announce_stop, log=log)) as stop:
        yield_to_the_web()
        catch_up = must_catch_up(settings)
        if stop.is_set():
            log.info("stopped before the scheduler started")
            return
        jobs = run_scheduler(settings, stop, catch_up)
        try:
            stop.wait()
        finally:
            jobs.shutdown(wait=True)
    log.info("stopped cleanly")


def worker(settings: Settings) -> None:
    with stop_on_signals(partial(announce_stop, log=log)) as stop:
        yield_to_the_web()
        log.info("worker: sending queued digests")
        crashed = threading.Event()
        thread = worker_thread(settings, stop, crashed)
        while thread.is_alive() and not stop.wait(0.5):
            pass
        thread.join()
    if crashed.is_set():
        raise DigestError("the worker stopped after an error (logged above)")
    log.info("stopped cleanly")


def web(settings: Settings, with_scheduler: bool = False, with_worker: bool = False) -> None:
    """The web pages (and, for ``digest serve`` on PostgreSQL, a scheduler and a worker beside them)."""
    with stop_on_signals(partial(announce_stop, log=log)) as stop:
        catch_up = must_catch_up(settings) if with_scheduler else False
        if stop.is_set():
            log.info("stopped before the web started")
            return
        server, thread = start_web(settings, stop)
        jobs = run_scheduler(settings, stop, catch_up) if with_scheduler else None
        crashed = threading.Event()
        sender = worker_thread(settings, stop, crashed) if with_worker else None
        log.info("serving on http://%s:%d", settings.web.host, settings.web.port)
        try:
            while not stop.wait(0.5):
                if not thread.is_alive():
                    log.error("the web server stopped; stopping")
                    crashed.set()
                    stop.set()
        finally:
            server.should_exit = True
            if jobs is not None:
                jobs.shutdown(wait=True)
            if sender is not None:
                sender.join()
            # Requests in flight are answered first: one waiting for a database that hangs gets its
            # "try again" (or its unsubscribe kept on disk) at the keeper's bound.
            front = getattr(getattr(server.config.app, "state", None), "front", None)
            bound = front.keeper.answer_seconds if front is not None else None
            waited = max(WEB_STOP_SECONDS, (bound or 0) + 2)
            thread.join(waited)
            if thread.is_alive():
                log.warning("the web did not stop within %g s; exiting without waiting for it", waited)
            elif front is not None:
                front.keeper.close()  # never under a request still using its connections
    if crashed.is_set():
        raise DigestError("the web server or the worker stopped after an error (logged above)")
    log.info("stopped cleanly")
