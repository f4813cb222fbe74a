"""``GET /healthz``: the last cycle's time and outcome, for people, monitors and the container healthcheck.

200 while the service keeps its schedule ("degraded" when a source answered with no papers on a
day it usually lists some: :func:`digest.cycle.coverage.quiet_sources`); 503 when the last cycle failed
(a source was down, an email was not handed over, or the cycle was stopped with digests left) or
when the last scheduled time passed, plus the grace period, without any cycle starting — the two
ways a day gets lost.
The judgement (:func:`assess`) is pure; the route only gathers the inputs.

The details (the last cycle, its counts and errors) go only to loopback: the container's
healthcheck, ``curl`` on the host, a monitor through a trusted proxy on the same host. Anyone else
gets ``{"status": ...}`` with the same status code, which is all a monitor needs. The client is
decided as everywhere else: ``X-Forwarded-For`` only from ``web.trusted_proxies``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from digest.clock import cron_trigger
from digest.cycle.coverage import quiet_sources
from digest.cycle.schedule import FireWindow, started
from digest.errors import DigestError, StoreError
from digest.settings import Settings
from digest.state.store import Store
from digest.web.security import is_loopback, operator_client, trusted_networks


def cycle_summary(cycle: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("as_of", "started_at", "finished_at", "trigger", "fetched", "new", "matched", "sent", "failed", "pending")
    summary = {key: cycle.get(key) for key in keys}
    summary["outcome"] = "ok" if cycle.get("ok") else ("stopped" if cycle.get("stopped") else "failed")
    summary["sources"] = [
        {"name": s.get("name"), "ok": s.get("ok"), "days_failed": s.get("days_failed", [])}
        for s in cycle.get("sources", [])
    ]
    if cycle.get("errors"):
        summary["errors"] = cycle["errors"][:5]
    return summary


def failing_because(cycle: Mapping[str, Any]) -> str:
    """Why the last cycle failed, as an operator reads it: the sources that were down (with the
    days owed), else the emails not handed over."""
    down = [
        f"source {s.get('name')} down" + (f" ({', '.join(s['days_failed'])})" if s.get("days_failed") else "")
        for s in cycle.get("sources") or ()
        if isinstance(s, Mapping) and not s.get("ok", True)
    ]
    if down:
        return "; ".join(down) + "; fetched again at the next cycle"
    return "the last cycle did not deliver everything; it is retried at the next cycle"


def only_addresses_refused(cycle: Mapping[str, Any]) -> bool:
    """The cycle failed only because the server refused some addresses for good, and others got theirs."""
    failed, refused = int(cycle.get("failed") or 0), int(cycle.get("refused") or 0)
    sources_ok = all(s.get("ok", True) for s in cycle.get("sources", []))
    return 0 < failed == refused and int(cycle.get("sent") or 0) > 0 and sources_ok and not cycle.get("pending")


def assess(
    cycles: Sequence[Mapping[str, Any]],
    last_scheduled: datetime | None,
    now: datetime,
    grace: timedelta,
    serving_since: datetime,
) -> tuple[int, dict[str, Any]]:
    """Status code and body for the health endpoint.

    A scheduled time counts as missed once ``grace`` has passed with no cycle started at or after
    it — but only times the service was responsible for: after the last recorded cycle, or, in a
    store with no cycle yet, after this service started.
    """
    real = sorted((c for c in cycles if not c.get("dry_run")), key=started)
    last = real[-1] if real else None
    body: dict[str, Any] = {
        "status": "ok",
        "last_cycle": cycle_summary(last) if last else None,
        "last_scheduled": last_scheduled.isoformat() if last_scheduled else None,
    }
    if last is not None and only_addresses_refused(last):
        # One dead mailbox is that person's problem, not the service's: say so, stay healthy.
        body["status"] = "degraded"
        body["problem"] = f"{last.get('refused')} address(es) refused by the SMTP server; see `digest status`"
    elif last is not None and not last.get("ok"):
        body["status"] = "failing"
        body["problem"] = failing_because(last)
        return 503, body
    if last_scheduled is not None and now - last_scheduled > grace:
        responsible = last is not None or last_scheduled >= serving_since
        if responsible and (last is None or started(last) < last_scheduled):
            body["status"] = "missed"
            body["problem"] = f"no cycle ran for the scheduled time {last_scheduled.isoformat()}"
            return 503, body
    return 200, body


CyclesProvider = Callable[[], Sequence[Mapping[str, Any]]]


T = TypeVar("T")


class SharedCall(Generic[T]):
    """One call of ``work`` at a time, its answer shared by everyone who asked while it ran.

    Anyone may ask ``/healthz``, as often as they like: a flood of them costs the store one read
    at a time, never a thread and a connection each. Nothing is kept once the call is over: an
    answer is at most as old as the read that was under way when its request came."""

    def __init__(self, work: Callable[[], Awaitable[T]]) -> None:
        self.work = work
        self.running: asyncio.Task[T] | None = None

    async def __call__(self) -> T:
        task = self.running
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self.running = asyncio.ensure_future(self.work())
            task.add_done_callback(_retrieved)  # every asker may have given up: no "never retrieved"
        return await asyncio.shield(task)  # one asker giving up does not cancel the others' answer


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def health_status(
    settings: Settings,
    now: datetime,
    serving_since: datetime,
    cycles_of: CyclesProvider | None = None,
    window: FireWindow | None = None,
) -> tuple[int, dict[str, Any]]:
    """Gathers the inputs of :func:`assess`. ``cycles_of`` gives the recorded cycles (``digest
    serve``: from its in-memory store); by default the store file is read."""
    try:
        cycles = cycles_of() if cycles_of is not None else Store(settings.data_dir, writable=False).cycles(last=50)
    except DigestError as exc:
        return 503, {"status": "error", "error": str(exc)}
    window = window or FireWindow(cron_trigger(settings.schedule.cron, settings.schedule.timezone))
    last_scheduled, upcoming = window.around(now)
    status, body = assess(
        cycles,
        last_scheduled,
        now,
        timedelta(seconds=settings.schedule.misfire_grace_seconds),
        serving_since,
    )
    quiet = quiet_sources(cycles, settings.lookback_days, settings.sources.arxiv.categories)
    if quiet and status == 200:  # answered, but with nothing on a day it usually lists papers
        body["status"] = "degraded"
        body["problem"] = "; ".join([*([body["problem"]] if body.get("problem") else []), *quiet.values()])
        body["quiet_sources"] = sorted(quiet)
    body["next_run"] = upcoming.isoformat() if upcoming else None
    return status, body


def routes(
    settings: Settings,
    cycles_of: CyclesProvider | None = None,
    in_thread: Callable[..., Awaitable[Any]] = run_in_threadpool,
) -> list[Route]:
    """``GET /healthz``; ``in_thread`` runs the read (:meth:`digest.web.front.Front.in_thread`: a
    store that does not answer in time is a 503 "error", not a health check that hangs)."""
    serving_since = datetime.now(UTC)  # the app is built when the service starts
    window = FireWindow(cron_trigger(settings.schedule.cron, settings.schedule.timezone))
    trusted = trusted_networks(settings.web.trusted_proxies)

    async def assessed() -> tuple[int, dict[str, Any]]:
        # In a worker thread: the cycles may have to be read again after another process wrote.
        try:
            answer: tuple[int, dict[str, Any]] = await in_thread(
                health_status, settings, datetime.now(UTC), serving_since, cycles_of, window
            )
            return answer
        except StoreError as exc:
            return 503, {"status": "error", "error": str(exc)}

    shared = SharedCall(assessed)

    async def healthz(request: Request) -> JSONResponse:
        status, body = await shared()
        peer = request.client.host if request.client else None
        client = operator_client(peer, request.headers, trusted)
        if client is None or not is_loopback(client):
            body = {"status": body["status"]}
        return JSONResponse(body, status_code=status)

    return [Route("/healthz", healthz, methods=["GET"])]
