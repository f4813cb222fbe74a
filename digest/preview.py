"""The live preview of the sign-up form: which stored papers of the last days a set of rules matches.

Pure: the web layer builds the :class:`~digest.rules.ItemIndex` (and caches it); this module
matches, ranks as the digest would, and marks the matched words (escaped, via ``highlight.mark``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup

from digest.highlight import mark, spans_for
from digest.models import DigestEntry
from digest.render import rank_entries
from digest.rules import ItemIndex, Matcher, Rule

PREVIEW_DAYS = 7
MAX_SHOWN = 20
SNIPPET_CHARS = 110  # either side of the first match in the abstract


@dataclass(frozen=True, slots=True)
class PreviewEntry:
    title_html: Markup
    url: str
    listed_on: date
    rules: tuple[str, ...]
    snippet_html: Markup | None


@dataclass(frozen=True, slots=True)
class Preview:
    entries: tuple[PreviewEntry, ...]
    matched: int
    considered: int


def snippet(text: str, spans: Sequence[tuple[int, int]], reach: int = SNIPPET_CHARS) -> Markup | None:
    """The abstract around its first match, cut at spaces, with the matches in that window marked."""
    if not spans:
        return None
    first = min(start for start, _ in spans)
    low = max(0, first - reach)
    high = min(len(text), first + reach)
    if low > 0:
        space = text.find(" ", low, first)
        low = space + 1 if space != -1 else low
    if high < len(text):
        space = text.rfind(" ", first, high)
        high = space if space > first else high
    inside = [(s - low, e - low) for s, e in spans if s >= low and e <= high]
    body = mark(text[low:high], inside)
    return Markup("{}{}{}").format("… " if low > 0 else "", body, " …" if high < len(text) else "")


def build_preview(index: ItemIndex, rules: Sequence[Rule], limit: int = MAX_SHOWN) -> Preview:
    matcher = Matcher(index)
    entries = [
        DigestEntry(index.items[doc], matches)
        for doc, matches in matcher.match(rules).items()
        if not index.items[doc].withdrawn
    ]
    shown = []
    for entry in rank_entries(entries)[:limit]:
        highlights = [h for m in entry.matches for h in m.highlights]
        shown.append(
            PreviewEntry(
                title_html=mark(entry.item.title, spans_for(highlights, "title")),
                url=entry.item.url,
                listed_on=entry.item.listed_on,
                rules=tuple(dict.fromkeys(m.rule for m in entry.matches)),
                snippet_html=snippet(entry.item.abstract, spans_for(highlights, "abstract")),
            )
        )
    return Preview(tuple(shown), matched=len(entries), considered=len(index.items))
