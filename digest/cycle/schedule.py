"""When cycles are due: the last good cycle, whether a start must catch up, and the fire times
``/healthz`` asks for on every probe. Fire times themselves come from :mod:`digest.clock`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from digest.clock import WallClockCron, last_fire, next_fire


def started(cycle: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(cycle["started_at"])


def last_good(cycles: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The latest cycle that ran for real and kept every promise (sent all, fetched all)."""
    good = [c for c in cycles if c.get("ok") and not c.get("dry_run")]
    return max(good, key=started, default=None)


def cycle_left_traces(source_states: Iterable[Mapping[str, Any]], items_seen: int, deliveries_journaled: int) -> bool:
    """A cycle ran in this store, recorded or not: a source was fetched, a paper kept, an email journaled.

    A cycle killed (``kill -9``, a power cut) before its end records no cycle, but its fetch
    checkpoint and its delivery journal stay behind. A store with only subscribers has never run
    one (their changes are journaled too, which is why deliveries are counted, not journal bytes).
    """
    return items_seen > 0 or deliveries_journaled > 0 or any(s.get("last_attempt_at") for s in source_states)


def needs_catch_up(
    cycles: Iterable[Mapping[str, Any]], last_scheduled: datetime | None, unrecorded_cycle: bool = False
) -> bool:
    """True when the service was down (or failing) at the last scheduled time.

    A store with no cycle at all has missed nothing: the service has never run before, and its
    first cycle is the next scheduled one. Unless a cycle started and was killed before recording
    itself (``unrecorded_cycle``, see :func:`cycle_left_traces`): that one counts as failed.
    """
    recorded = [c for c in cycles if not c.get("dry_run")]
    if last_scheduled is None or not (recorded or unrecorded_cycle):
        return False
    good = last_good(recorded)
    return good is None or started(good) < last_scheduled


class FireWindow:
    """:func:`last_fire` and :func:`next_fire` of one trigger, computed again only when ``now``
    leaves the span between them (or the clock goes back).

    Why: ``/healthz`` asks both on every probe, and the two searches were most of a probe's
    cost; between two fire times their answers cannot change.
    """

    def __init__(self, trigger: WallClockCron) -> None:
        self.trigger = trigger
        self._span: tuple[datetime | None, datetime | None] = (None, None)  # one tuple: threads read it

    def around(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """``(last_fire(now), next_fire(now))``."""
        last, upcoming = self._span
        if last is not None and upcoming is not None and last < now < upcoming:
            return last, upcoming
        self._span = (last_fire(self.trigger, now), next_fire(self.trigger, now))
        return self._span
