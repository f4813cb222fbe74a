"""The coverage receipt a digest ends with: what the cycle checked, source by source. Pure.

The most common complaint about paper bots is a quiet day that was really a broken one: a source
that was down, or answered with nothing on a day it lists papers, looks the same as a day with
nothing for you. So each digest says what was checked ("Checked Hugging Face, Nov
19-20: 119 papers · arXiv cs.CV+cs.LG: 104 papers · 2 feeds: 12 papers"), and says plainly when a
source was down or unusually empty; an unusual silence is also a note at the top of the digest.

"Usually lists papers": Hugging Face lists papers every weekday and arXiv announces new ones
Monday to Friday; and the source's own recent counts (the median of its last non-empty cycles) are
at least :data:`USUAL_MIN_PAPERS`, so a source that always lists a handful is never flagged for an
empty day. With no history yet, the calendar alone decides for those two; a feed never is.
:func:`quiet_sources` applies the same rule to recorded cycles, for ``digest status``, ``/healthz``
and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from statistics import median
from typing import Any

from digest.models import SourceReport
from digest.sources.registry import source_label

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
FEEDS_LISTED = 2  # more feeds that answered as usual than this are summed up in one part
USUAL_MIN_PAPERS = 3  # a source whose usual count is smaller may well have an empty day
USUAL_HISTORY = 10  # how many of a source's last non-empty cycles make its usual count
HISTORY_CYCLES = 30  # how many recorded cycles are searched for those


@dataclass(frozen=True, slots=True)
class Coverage:
    """The receipt line, and a note for each source that was unusually empty."""

    receipt: str = ""
    notes: list[str] = field(default_factory=list)


def _day(day: date) -> str:
    return f"{MONTHS[day.month - 1]} {day.day}"


def _days(days: Sequence[date]) -> str:
    """``Nov 20`` or ``Nov 19–20`` (``Oct 30–Nov 2``): the first and last day fetched."""
    if not days:
        return ""
    first, last = min(days), max(days)
    if first == last:
        return _day(first)
    return f"{_day(first)}–{last.day}" if first.month == last.month else f"{_day(first)}–{_day(last)}"


def receipt_label(name: str, arxiv_categories: Sequence[str]) -> str:
    """How the receipt names a source: as each paper's line does, arXiv with its categories."""
    label = source_label(name)
    return f"{label} {'+'.join(arxiv_categories)}" if name == "arxiv" and arxiv_categories else label


def usual_count(history: Sequence[int]) -> int | None:
    """The median of a source's last :data:`USUAL_HISTORY` non-empty counts (oldest first); None
    when it never listed anything."""
    counts = [count for count in history if count > 0][-USUAL_HISTORY:]
    return round(median(counts)) if counts else None


def usually_lists(name: str, days: Sequence[date], as_of: date, before: int | Sequence[int] | None) -> bool:
    """Whether ``name`` normally has papers for ``days``, given its counts in the cycles ``before``
    (one count, or a history, oldest first): see the module's docstring."""
    if name == "hf_papers" and not any(day.weekday() < 5 for day in days):
        return False
    if name == "arxiv" and as_of.weekday() >= 5:
        return False
    usual = usual_count([before] if isinstance(before, int) else list(before or ()))
    if usual is None:
        return name in ("hf_papers", "arxiv")
    return usual >= USUAL_MIN_PAPERS


def _papers(count: int) -> str:
    return f"{count} paper" if count == 1 else f"{count} papers"


def coverage(
    sources: Sequence[SourceReport],
    days: Mapping[str, Sequence[date]],
    as_of: date,
    before: Mapping[str, int | Sequence[int]],
    arxiv_categories: Sequence[str] = (),
) -> Coverage:
    """The receipt for a cycle's ``sources`` (as its report has them), the ``days`` each was asked
    for, and how many papers each found in the previous cycle or cycles (``before``, oldest first)."""
    parts: list[str] = []
    notes: list[str] = []
    feeds: list[SourceReport] = []
    for source in sources:
        label = receipt_label(source.name, arxiv_categories)
        asked = list(days.get(source.name, ()))
        when = f", {_days(asked)}" if source.name == "hf_papers" and asked else ""
        if not source.ok:
            got = f" ({_papers(source.fetched)} from the rest)" if source.fetched else ""
            parts.append(f"{label}{when}: could not be reached for some days{got}")
        elif source.fetched:
            if source.name in ("hf_papers", "arxiv"):
                parts.append(f"{label}{when}: {_papers(source.fetched)}")
            else:
                feeds.append(source)
        elif usually_lists(source.name, asked, as_of, before.get(source.name)):
            parts.append(f"{label}{when}: nothing, though it usually lists papers")
            on = f" for {_days(asked)}" if source.name == "hf_papers" and asked else ""
            notes.append(
                f"{label} listed no papers{on}, when it usually lists some: it may be having trouble, "
                "and this digest may be missing papers."
            )
        else:
            parts.append(f"{label}{when}: no papers")
    if len(feeds) > FEEDS_LISTED:
        parts.append(f"{len(feeds)} feeds: {_papers(sum(f.fetched for f in feeds))}")
    else:
        parts.extend(f"{f.name}: {_papers(f.fetched)}" for f in feeds)
    return Coverage("Checked " + " · ".join(parts) + "." if parts else "", notes)


def source_history(cycles: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Each source's paper counts in the recorded ``cycles`` it answered (oldest first): the
    ``before`` of :func:`coverage` and :func:`usually_lists`."""
    history: dict[str, list[int]] = {}
    for cycle in cycles:
        for source in cycle.get("sources", []):
            if source.get("ok", True):
                history.setdefault(str(source.get("name")), []).append(int(source.get("fetched") or 0))
    return history


def quiet_sources(
    cycles: Sequence[Mapping[str, Any]], lookback_days: int, arxiv_categories: Sequence[str] = ()
) -> dict[str, str]:
    """The sources that answered the last recorded cycle with no papers though they usually list
    some (:func:`usually_lists`, on their counts in the cycles before it), each with the reason that
    ``digest status``, ``/healthz`` and ``/metrics`` give. ``cycles`` as the store keeps them, oldest
    first. A broken upstream that answers "[]" must not look like a quiet day."""
    real = [cycle for cycle in cycles if not cycle.get("dry_run")]
    if not real:
        return {}
    last, earlier = real[-1], real[:-1]
    as_of = date.fromisoformat(str(last["as_of"]))
    days = [as_of - timedelta(days=k) for k in range(lookback_days)]
    quiet: dict[str, str] = {}
    for source in last.get("sources", []):
        name = str(source.get("name"))
        if not source.get("ok", True) or source.get("fetched"):
            continue
        history = source_history(earlier).get(name, [])
        if usually_lists(name, days, as_of, history):
            usual = usual_count(history)
            how_many = f"about {_papers(usual)}" if usual else "papers on weekdays"
            quiet[name] = (
                f"{receipt_label(name, arxiv_categories)} listed no papers in the cycle as of {as_of}, though it "
                f"usually lists {how_many}: it may be having trouble"
            )
    return quiet
