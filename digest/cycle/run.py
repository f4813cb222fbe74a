"""Wiring: build a cycle's real dependencies from settings and run it under the store lock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta

from digest.clock import cron_trigger, today_in, utc_now
from digest.cycle.config import CycleConfig
from digest.cycle.rhythm import Due
from digest.cycle.steps import Cycle
from digest.errors import SettingsError
from digest.mail.mailer import Mailer, make_mailer
from digest.mail.message import load_dkim_key
from digest.mail.quota import Limits
from digest.models import CycleReport
from digest.paths import OUTBOX_DIR
from digest.retry import Retrier
from digest.settings import Settings
from digest.sources import Source, make_client, registry
from digest.state.backend import StoreBackend, is_postgres, open_backend
from digest.state.keeper import StoreKeeper
from digest.state.store import open_store


def latest_as_of(settings: Settings) -> date:
    """The latest day a cycle may run as of: tomorrow by the real clock, in the schedule's zone
    (a day of slack for a caller in a zone ahead of it)."""
    return today_in(settings.schedule.timezone) + timedelta(days=1)


def check_as_of(settings: Settings, as_of: date, what: str = "as-of date") -> None:
    """Refuse a day past :func:`latest_as_of`: a cycle "in the future" would fetch empty days, mark
    subscribers caught up to them and prune as if that day had come, losing what is listed before."""
    latest = latest_as_of(settings)
    if as_of > latest:
        raise SettingsError(
            f"{what} {as_of.isoformat()} is in the future: the latest allowed is {latest.isoformat()} "
            f"(today is {(latest - timedelta(days=1)).isoformat()} in {settings.schedule.timezone}); "
            "give an earlier date or fix the system clock"
        )


def cycle_config(settings: Settings) -> CycleConfig:
    """The few values a cycle's steps read, from the settings; the one place that knows where each
    sits in the settings file. Resolving the secret key may create it; a bad DKIM key stops here,
    before anything is sent."""
    smtp, retry = settings.smtp, settings.retry
    return CycleConfig(
        data_dir=settings.data_dir,
        public_url=settings.public_url,
        site_name=settings.site_name,
        sender_name=settings.sender_name or settings.site_name,
        from_address=smtp.from_address,
        secret_key=settings.resolved_secret_key(),
        dkim_key=load_dkim_key(settings.dkim, smtp.from_address),
        lookback_days=settings.lookback_days,
        catchup_days=settings.catchup_days,
        retention_days=settings.retention_days,
        arxiv_categories=tuple(settings.sources.arxiv.categories),
        limits=Limits(smtp.max_per_second, smtp.max_per_hour, smtp.max_per_day),
        connections=smtp.connections,
        throttle_budget_seconds=smtp.throttle_budget_seconds,
        send_retry=retry.policy(retry.send_budget_seconds),
        http_timeout_seconds=settings.http.timeout_seconds,
        bounces_address=settings.bounces.address,
    )


def run_once(
    settings: Settings,
    as_of: date | None = None,
    dry_run: bool = False,
    sources: Sequence[Source] | None = None,
    mailer: Mailer | None = None,
    progress: Callable[[int, int], None] | None = None,
    lock_wait_seconds: float = 0,
    stop: threading.Event | None = None,
    trigger: str = "manual",
    keeper: StoreKeeper | None = None,
    due: Due | None = None,
    enqueue: bool = False,
) -> CycleReport:
    """One full cycle as of ``as_of`` (default: today in the schedule's zone), for those ``due``
    picks (default: :func:`run_now`'s, ``digest run``'s meaning).

    ``stop``, once set (by a signal handler), ends retry waits at once and stops the send loop
    after the email being handed over; everything sent is recorded before this returns. A day
    past tomorrow is refused (:func:`check_as_of`) before the store is opened. With ``keeper``
    (``digest serve``) the cycle runs on the process's shared in-memory store, still under the
    file lock, so the web's changes land in the store it sends from. ``enqueue`` (``digest
    scheduler``): the planned digests go to the workers' queue (:mod:`digest.cycle.queue`).
    """
    day = as_of or today_in(settings.schedule.timezone)
    check_as_of(settings, day)
    stop = stop or threading.Event()
    config = cycle_config(settings)
    chosen_mailer = mailer or make_mailer(settings.smtp, settings.data_dir / OUTBOX_DIR)
    deliver = queueing() if enqueue else None
    fetch_retrier = Retrier(settings.retry.policy(settings.retry.fetch_budget_seconds), stop=stop)
    with (
        cycle_store(settings, keeper, dry_run, lock_wait_seconds, stop) as store,
        make_client(config.http_timeout_seconds, retrier=fetch_retrier) as client,
        chosen_mailer as active_mailer,
    ):
        chosen_sources = (
            list(sources) if sources is not None else registry.configured_sources(settings.sources, store, utc_now)
        )
        parts = (config, store, chosen_sources, active_mailer, client, utc_now)
        cycle = Cycle(*parts, progress=progress, stop=stop, trigger=trigger, enqueue=deliver)
        chosen = due or run_now(settings)
        return cycle.run(day, dry_run=dry_run, select=chosen, handled_at=chosen.now)


def queueing() -> Callable[..., int]:
    """The send stage of ``digest scheduler``; psycopg is imported only for a PostgreSQL store."""
    from digest.cycle.queue import enqueue_plan

    return enqueue_plan


def run_now(settings: Settings) -> Due:
    """Who ``digest run`` serves: everyone daily on the schedule (as before rhythms existed: one
    cycle now), and those with their own hour or a weekly digest only if theirs is due."""
    schedule = cron_trigger(settings.schedule.cron, settings.schedule.timezone)
    return Due(utc_now(), schedule, on_schedule="all")


@contextmanager
def cycle_store(
    settings: Settings, keeper: StoreKeeper | None, dry_run: bool, wait_seconds: float, stop: threading.Event
) -> Iterator[StoreBackend]:
    """The store a cycle works on: the keeper's shared one, or one read for this cycle alone.

    PostgreSQL (``store.url``): its own connection, holding the cycle's advisory lock (one cycle at a
    time across processes); a dry run is a snapshot rolled back at the end."""
    if is_postgres(settings.store.url):
        with open_backend(
            settings.store.url,
            settings.data_dir,
            write=not dry_run,
            wait_seconds=wait_seconds,
            stop=stop,
            exclusive=True,
        ) as backend:
            yield backend
    elif keeper is not None and not dry_run:
        with keeper.cycle(wait_seconds, stop) as store:
            yield store
    else:
        with open_store(settings.data_dir, write=not dry_run, wait_seconds=wait_seconds, stop=stop) as store:
            yield store
