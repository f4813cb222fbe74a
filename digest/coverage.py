"""The coverage receipt a digest ends with: what the cycle checked, source by source. Pure.

The most common complaint about paper bots is a quiet day that was really a broken one: a source
that was down, or answered with nothing on a day it lists papers, looks the same as a day with
nothing for you. So each digest says what was checked ("Checked Hugging Face Daily Papers, Nov
19-20: 119 papers · arXiv cs.CV+cs.LG: 104 papers · 2 feeds: 12 papers"), and says plainly when a
source was down or unusually empty; an unusual silence is also a note at the top of the digest.

"Usually lists papers": Hugging Face lists papers every weekday and arXiv announces new ones
Monday to Friday; any other source (a feed) is judged by the previous cycle, which found some.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from digest.models import SourceReport

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
FEEDS_LISTED = 2  # more feeds that answered as usual than this are summed up in one part


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


def source_label(name: str, arxiv_categories: Sequence[str]) -> str:
    """How the receipt names a source: the built-in ones by site (and arXiv's categories), feeds by name."""
    if name == "hf_papers":
        return "Hugging Face Daily Papers"
    if name == "arxiv":
        return "arXiv " + "+".join(arxiv_categories) if arxiv_categories else "arXiv"
    return name


def usually_lists(name: str, days: Sequence[date], as_of: date, before: int | None) -> bool:
    """Whether ``name`` normally has papers for ``days``: see the module's docstring."""
    if name == "hf_papers":
        return any(day.weekday() < 5 for day in days)
    if name == "arxiv":
        return as_of.weekday() < 5
    return bool(before)


def _papers(count: int) -> str:
    return f"{count} paper" if count == 1 else f"{count} papers"


def coverage(
    sources: Sequence[SourceReport],
    days: Mapping[str, Sequence[date]],
    as_of: date,
    before: Mapping[str, int],
    arxiv_categories: Sequence[str] = (),
) -> Coverage:
    """The receipt for a cycle's ``sources`` (as its report has them), the ``days`` each was asked
    for, and how many papers each found in the previous cycle (``before``)."""
    parts: list[str] = []
    notes: list[str] = []
    feeds: list[SourceReport] = []
    for source in sources:
        label = source_label(source.name, arxiv_categories)
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
