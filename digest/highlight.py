"""Escape text from a feed and mark the matched words, for the HTML and text parts alike."""

from __future__ import annotations

from collections.abc import Iterable

from markupsafe import Markup, escape

from digest.models import Highlight


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def mark(text: str, spans: Iterable[tuple[int, int]]) -> Markup:
    """``text`` escaped, with each span wrapped in ``<mark>``; nothing from ``text`` stays raw."""
    out: list[str] = []
    cursor = 0
    for start, end in merge_spans(s for s in spans if 0 <= s[0] < s[1] <= len(text)):
        out.append(str(escape(text[cursor:start])))
        out.append(f"<mark>{escape(text[start:end])}</mark>")
        cursor = end
    out.append(str(escape(text[cursor:])))
    return Markup("".join(out))


def spans_for(highlights: Iterable[Highlight], field: str) -> list[tuple[int, int]]:
    return [(h.start, h.end) for h in highlights if h.field == field]


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to about ``limit`` characters at a sentence end, else at a word boundary."""
    if len(text) <= limit:
        return text
    window = text[:limit]
    sentence_end = max(window.rfind(". "), window.rfind("? "), window.rfind("! "))
    if sentence_end >= limit * 0.6:
        return window[: sentence_end + 1]
    space = window.rfind(" ")
    return (window[:space] if space > 0 else window).rstrip(",;: ") + "…"
