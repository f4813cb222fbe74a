"""``digest serve``: the daily cycle on a schedule (APScheduler) and the web pages (uvicorn), in one process.

uvicorn owns the signals: SIGTERM/SIGINT make it stop serving; the scheduler is then shut down,
waiting for a running cycle to finish, so no email is sent without being recorded.
"""

from __future__ import annotations

import logging

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from digest.errors import DigestError
from digest.runner import run_once
from digest.settings import Settings
from digest.web import create_app

log = logging.getLogger(__name__)

CYCLE_JOB_ID = "daily-cycle"


def scheduled_cycle(settings: Settings) -> None:
    """The scheduler's job: one cycle; errors are logged, never raised into the scheduler."""
    try:
        report = run_once(settings, lock_wait_seconds=600)
    except DigestError as exc:
        log.error("scheduled cycle failed: %s", exc)
        return
    except Exception:
        log.exception("scheduled cycle crashed")
        return
    log.info("scheduled cycle done: %s", report.summary())


def make_scheduler(settings: Settings) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone=settings.schedule.timezone)
    scheduler.add_job(
        scheduled_cycle,
        CronTrigger.from_crontab(settings.schedule.cron, timezone=settings.schedule.timezone),
        args=[settings],
        id=CYCLE_JOB_ID,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.schedule.misfire_grace_seconds,
    )
    return scheduler


def serve(settings: Settings) -> None:
    scheduler = make_scheduler(settings)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=settings.web.host, port=settings.web.port, log_level="info")
    )
    scheduler.start()
    job = scheduler.get_job(CYCLE_JOB_ID)
    log.warning(
        "serving on http://%s:%d; next cycle at %s",
        settings.web.host,
        settings.web.port,
        job.next_run_time if job else "?",
    )
    try:
        server.run()
    finally:
        scheduler.shutdown(wait=True)
