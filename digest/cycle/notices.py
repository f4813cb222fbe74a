"""What a cycle's digests say about its fetch, above the papers and in the closing receipt.

Days lost for good (also the cycle's errors, so ``digest run`` and ``/healthz`` say it), then
sources that were down (their days come later), then sources that listed nothing when they usually
list papers; the receipt names what every source brought (:mod:`digest.cycle.coverage`).
"""

from __future__ import annotations

import logging

from digest.cycle.config import CycleConfig
from digest.cycle.coverage import HISTORY_CYCLES, coverage, source_history
from digest.cycle.days import SourceDays, lost_days_notices
from digest.models import CycleReport
from digest.state.backend import StoreBackend

log = logging.getLogger(__name__)


def digest_notices(
    store: StoreBackend, report: CycleReport, planned: dict[str, SourceDays], config: CycleConfig
) -> tuple[list[str], str]:
    """The notes every digest of the cycle carries, and its receipt line."""
    notices = lost_days_notices(planned, config.catchup_days)
    report.errors.extend(notices)
    for source in report.sources:
        if not source.ok:
            days = ", ".join(source.days_failed)
            notices.append(
                f"{source.name} could not be reached for {days}, or sent only part of them; its papers "
                "from those days will come in a later digest."
            )
    before = source_history(store.cycles(last=HISTORY_CYCLES))
    asked = {name: days.fetch for name, days in planned.items()}
    found = coverage(report.sources, asked, report.as_of, before, config.arxiv_categories)
    for note in found.notes:
        log.warning("%s", note)
    return notices + found.notes, found.receipt
