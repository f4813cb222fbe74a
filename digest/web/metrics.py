"""``GET /metrics``: the service's state in Prometheus text format, for a self-hoster's Prometheus.

What an alert needs: when the last cycle ran and how it ended, its duration and counts (fetched,
new, matched, sent, failed, pending), each source's state (answered, papers, days owed, and the
"answered with nothing on a day it usually lists papers" flag of :func:`digest.cycle.coverage.quiet_sources`,
so a broken upstream does not look like a quiet day), subscribers by state, and the next run.

Everything comes from the process's in-memory store (:class:`digest.state.keeper.StoreKeeper`, read in a
worker thread, never on the event loop), like ``/healthz``: a scrape costs no parse of the store
file. The values are read at each scrape into a throw-away registry (no global state), so they are
exactly what the store says.

Only the clients in ``web.metrics_allow`` (loopback by default) get them; the client is decided as
everywhere else (``X-Forwarded-For`` only from ``web.trusted_proxies``), so a Prometheus behind a
reverse proxy is allowed by its own address and a visitor cannot claim to be loopback. Empty: off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from digest.clock import cron_trigger, next_fire
from digest.cycle.coverage import HISTORY_CYCLES, quiet_sources
from digest.cycle.schedule import started
from digest.settings import Settings
from digest.state.backend import StoreBackend
from digest.web.security import IPNetwork, operator_client, trusted_networks

T = TypeVar("T")
# The classic text format, which every Prometheus reads (2.x and 3.x; our names need no escaping).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
Reader = Callable[[Callable[[StoreBackend], T]], T]  # StoreKeeper.read


@dataclass(slots=True)
class Snapshot:
    """What one scrape shows, read from the store in one go."""

    cycles: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    subscribers: dict[str, int]
    failing: int
    quiet: dict[str, str] = field(default_factory=dict)
    next_run: datetime | None = None


def take_snapshot(store: StoreBackend, settings: Settings, now: datetime) -> Snapshot:
    """The store's numbers (call it under the store's lock: :meth:`StoreKeeper.read`)."""
    cycles = [c for c in store.cycles(last=HISTORY_CYCLES) if not c.get("dry_run")]
    people = store.subscribers()
    active = sum(1 for p in people if p.active)
    return Snapshot(
        cycles=cycles,
        sources=store.source_states(),
        subscribers={"active": active, "paused": len(people) - active, "unsubscribed": store.departed_count()},
        failing=len(store.failures()),
        quiet=quiet_sources(cycles, settings.lookback_days, settings.sources.arxiv.categories),
        next_run=next_fire(cron_trigger(settings.schedule.cron, settings.schedule.timezone), now),
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _seconds(text: Any) -> float | None:
    return datetime.fromisoformat(text).timestamp() if isinstance(text, str) and text else None


def families(snapshot: Snapshot) -> Iterable[Metric]:
    """The metric families of ``snapshot``. Pure."""
    cycles = sorted(snapshot.cycles, key=started)
    if cycles:
        yield from _last_cycle(cycles[-1])
        yield from _last_sources(cycles[-1], snapshot.quiet)
    good = [c for c in cycles if c.get("ok")]
    if good:
        at = _seconds(good[-1].get("finished_at")) or _seconds(good[-1].get("started_at")) or 0
        yield _gauge("digest_last_success_timestamp_seconds", "When the last fully successful cycle ended.", at)
    yield _labelled(
        "digest_source_days_owed",
        "Days the source failed on that are fetched again at the next cycles.",
        "source",
        {str(s.get("name")): len(s.get("failed_days") or []) for s in snapshot.sources},
    )
    yield _labelled(
        "digest_subscribers",
        "Subscribers by state: active, paused, unsubscribed (left and not back).",
        "state",
        snapshot.subscribers,
    )
    yield _gauge(
        "digest_subscribers_failing",
        "Subscribers whose last digest the mail server did not take; their papers stay pending.",
        snapshot.failing,
    )
    if snapshot.next_run is not None:
        yield _gauge(
            "digest_next_cycle_timestamp_seconds",
            "When the next scheduled cycle starts.",
            snapshot.next_run.timestamp(),
        )


def _last_cycle(last: Mapping[str, Any]) -> Iterable[Metric]:
    """How the last cycle went: when it ended, its outcome, duration and counts."""
    began, ended = _seconds(last.get("started_at")), _seconds(last.get("finished_at"))
    outcome = "ok" if last.get("ok") else ("stopped" if last.get("stopped") else "failed")
    yield _gauge("digest_last_cycle_timestamp_seconds", "When the last cycle ended (Unix time).", ended or began or 0)
    yield _gauge("digest_last_cycle_success", "1 if the last cycle kept every promise, else 0.", int(outcome == "ok"))
    yield _labelled(
        "digest_last_cycle_outcome",
        "How the last cycle ended: 1 for its outcome (ok, failed, stopped), 0 for the others.",
        "outcome",
        {name: int(name == outcome) for name in ("ok", "failed", "stopped")},
    )
    if began is not None and ended is not None:
        yield _gauge("digest_last_cycle_duration_seconds", "How long the last cycle took.", ended - began)
    yield _labelled(
        "digest_last_cycle_papers",
        "Papers in the last cycle: fetched, new (not stored before), matched (for some subscriber).",
        "stage",
        {key: int(last.get(key) or 0) for key in ("fetched", "new", "matched")},
    )
    yield _labelled(
        "digest_last_cycle_emails",
        "Digests of the last cycle: sent, failed (retried next cycle), refused (of the failed, for good).",
        "result",
        {key: int(last.get(key) or 0) for key in ("sent", "failed", "refused")},
    )
    yield _gauge(
        "digest_last_cycle_pending_digests",
        "Digests the last cycle left for the next one (it was stopped).",
        int(last.get("pending") or 0),
    )


def _last_sources(last: Mapping[str, Any], quiet: Mapping[str, str]) -> Iterable[Metric]:
    """Each source's state in the last cycle."""
    reports = {str(s.get("name")): s for s in last.get("sources", [])}
    yield _labelled(
        "digest_source_up",
        "1 if the source answered for every day in the last cycle.",
        "source",
        {name: int(bool(s.get("ok", True))) for name, s in reports.items()},
    )
    yield _labelled(
        "digest_source_fetched_papers",
        "Papers the source listed in the last cycle.",
        "source",
        {name: int(s.get("fetched") or 0) for name, s in reports.items()},
    )
    yield _labelled(
        "digest_source_unusually_empty",
        "1 if the source answered the last cycle with no papers though it usually lists some.",
        "source",
        {name: int(name in quiet) for name in reports},
    )


class _Fixed(Collector):
    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def exposition(snapshot: Snapshot) -> bytes:
    """``snapshot`` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families(snapshot))))
    return generate_latest(registry)


def allowed(client: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def routes(
    settings: Settings, read: Reader[Snapshot], in_thread: Callable[..., Awaitable[Any]] = run_in_threadpool
) -> list[Route]:
    """``GET /metrics``, served from ``read`` (the keeper's :meth:`~digest.state.keeper.StoreKeeper.read`)."""
    trusted = trusted_networks(settings.web.trusted_proxies)
    allow = trusted_networks(settings.web.metrics_allow)

    def scrape() -> bytes:
        return exposition(read(lambda store: take_snapshot(store, settings, datetime.now(UTC))))

    async def metrics(request: Request) -> Response:
        peer = request.client.host if request.client else None
        client = operator_client(peer, request.headers, trusted)
        if not allow:
            return PlainTextResponse("Not found.\n", status_code=404)
        if client is None or not allowed(client, allow):
            return PlainTextResponse("Forbidden: /metrics answers only web.metrics_allow.\n", status_code=403)
        body = await in_thread(scrape)
        return Response(body, media_type=TEXT_FORMAT, headers={"cache-control": "no-store"})

    return [Route("/metrics", metrics, methods=["GET"])]
