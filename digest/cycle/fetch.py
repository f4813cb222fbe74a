"""The fetch stage: ask each source for its days, store what is new, and report how each went.

Each source is asked for the days :func:`digest.cycle.days.source_days` names (the look-back
window, days it failed on, days no cycle ran), so downtime loses nothing within ``catchup_days``.
What a source noticed but could still use (an entry skipped, a field it did not know) goes into
the cycle's errors beside its days lost, so ``digest run`` and ``/healthz`` name it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime

import httpx

from digest.cycle.config import CycleConfig
from digest.cycle.days import (
    SourceDays,
    describe_days,
    lost_days_notices,
    lost_ranges,
    next_fetched_through,
    source_days,
)
from digest.models import CycleReport, Item, SourceReport
from digest.sources import FetchResult, Source
from digest.sources.keepable import keepable_item
from digest.sources.merge import merge_items, with_stored
from digest.state.backend import StoreBackend

log = logging.getLogger(__name__)


def fetch_sources(
    store: StoreBackend,
    sources: Sequence[Source],
    client: httpx.Client,
    config: CycleConfig,
    now: Callable[[], datetime],
    as_of: date,
    report: CycleReport,
) -> dict[str, SourceDays]:
    """Fetch every source and store what is new; returns the days of each source, for the notices.
    A feed or arXiv lists what it has now, whatever the days: for them more days cost nothing."""
    planned: dict[str, SourceDays] = {}
    fetched: list[Item] = []
    for source in sources:
        planned[source.name], items = _fetch_one(store, source, client, config, now, as_of, report)
        fetched.extend(map(keepable_item, items))
    # One paper, one item: the same id from two sources (or from this cycle and an earlier one).
    precedence = [source.name for source in sources]
    fetched = with_stored(merge_items(fetched, precedence), store.item, precedence)
    report.fetched = len(fetched)
    report.new = len(store.upsert_items(fetched, now()))
    if not report.dry_run:
        store.flush()
    return planned


def _fetch_one(
    store: StoreBackend,
    source: Source,
    client: httpx.Client,
    config: CycleConfig,
    now: Callable[[], datetime],
    as_of: date,
    report: CycleReport,
) -> tuple[SourceDays, list[Item]]:
    """One source: its days, its fetch, and (not in a dry run) what the store keeps of how it went."""
    through, failed = store.fetched_through(source.name), store.failed_days(source.name)
    days = source_days(as_of, config.lookback_days, config.catchup_days, failed, through)
    if days.caught_up:
        why = "when digest was not running"
        log.info("%s: also fetching papers listed %s, %s", source.name, describe_days(days.caught_up), why)
    for lost in lost_days_notices({source.name: days}, config.catchup_days):
        log.error("%s", lost)
    result = source.fetch(client, days.fetch)
    source_report = source_report_of(source.name, result)
    report.sources.append(source_report)
    report.errors.extend(result.warnings)
    if not report.dry_run:
        store.record_source(
            source_report,
            result.failed_days,
            now(),
            as_of=as_of,
            fetched_through=next_fetched_through(through, as_of, now().date()),
            caught_up=(days.caught_up[0], days.caught_up[-1]) if days.caught_up else None,
            lost=lost_ranges(days, config.catchup_days),
        )
    return days, result.items


def source_report_of(name: str, result: FetchResult) -> SourceReport:
    """Papers, not listings: one listed on two days of the window counts once (as the cycle's total)."""
    report = SourceReport(name=name, fetched=len({item.id for item in result.items}))
    if result.failed_days:
        report.ok = False
        report.error = "; ".join(result.errors)
        report.days_failed = [d.isoformat() for d in result.failed_days]
    return report
