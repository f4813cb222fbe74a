"""The records both stores keep alike: a source's fetch state and a delivery failure.

The TinyDB store and the PostgreSQL store differ in where a record lives, not in what it says:
``digest status`` and the next cycle read the same keys from either, so they are made here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from digest.models import SourceReport

LOST_RUNS_KEPT = 10  # the last runs of days a source will never fetch, for ``digest status``


def fetched_through(state: Mapping[str, Any]) -> date | None:
    """The day a source is fetched through (the next cycle fetches the days after it).

    A store from before this was kept has only ``last_ok_at`` (a UTC time): its date less a day,
    to be safe whatever the schedule's time zone. None when the source was never fetched.
    """
    if state.get("fetched_through"):
        return date.fromisoformat(state["fetched_through"])
    if state.get("last_ok_at"):
        return date.fromordinal(datetime.fromisoformat(state["last_ok_at"]).date().toordinal() - 1)
    return None


def after_fetch(
    state: dict[str, Any],
    report: SourceReport,
    days_failed: Iterable[date],
    at: datetime,
    as_of: date | None = None,
    through: date | None = None,
    caught_up: tuple[date, date] | None = None,
    lost: Iterable[tuple[date, date, str]] = (),
) -> dict[str, Any]:
    """``state`` updated after one fetch of ``report.name``: its failed days, how it went, the day it
    is now fetched ``through``, the days the cycle as of ``as_of`` fetched late (``caught_up``,
    first and last), and the last runs of days it will never fetch (first, last, why)."""
    state["failed_days"] = sorted({d.isoformat() for d in days_failed})
    state["last_attempt_at"] = at.isoformat()
    if report.ok:
        state["last_ok_at"] = at.isoformat()
    else:
        state["last_error"] = report.error
    if through is not None:
        state["fetched_through"] = through.isoformat()
    cycle = (as_of or at.date()).isoformat()
    if caught_up is not None:
        state["caught_up"] = {"as_of": cycle, "from": caught_up[0].isoformat(), "to": caught_up[1].isoformat()}
    runs = [{"as_of": cycle, "from": a.isoformat(), "to": b.isoformat(), "why": why} for a, b, why in lost]
    if runs:
        state["lost"] = (list(state.get("lost") or []) + runs)[-LOST_RUNS_KEPT:]
    return state


def failure(key: str, reason: str, at: datetime, permanent: bool, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """A delivery failure's record: the latest refusal, and how many since the first."""
    return {
        "email": key,
        "reason": reason,
        "at": at.isoformat(),
        "permanent": permanent,
        "count": (previous["count"] if previous else 0) + 1,
        "since": previous["since"] if previous else at.isoformat(),
    }
