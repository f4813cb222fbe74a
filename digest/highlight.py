"""Escape text from a feed and mark the matched words, for the HTML and text parts alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from markupsafe import Markup

from digest.models import Highlight


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def replace_five(text: str) -> str:
    """``str(markupsafe.escape(text))``, the same five entities, in five C-level replaces."""
    return (
        text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;").replace("'", "&#39;").replace('"', "&#34;")
    )


escape_html: Callable[[str], str]
"""``str(markupsafe.escape(text))`` without a :class:`Markup` per call: ``mark`` escapes several
segments per paper and the Markup wrapping cost more than the escaping.

markupsafe's own escaping of a ``str`` to a ``str`` (what ``escape`` wraps in Markup), from its C
speedups: one pass, three times faster than :func:`replace_five` on a name, and a cold render
escapes some 160 values. It is not public API, so should a release drop it (or come without the
C part), :func:`replace_five` takes over; the tests hold both to ``markupsafe.escape``.
"""
try:
    from markupsafe._speedups import _escape_inner as escape_html
except ImportError:  # pragma: no cover - a markupsafe without it
    escape_html = replace_five


def marked_html(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` escaped, with each span wrapped in ``<mark>``; nothing from ``text`` stays raw.

    A plain ``str`` for callers that build HTML without autoescape (the email's paper blocks);
    :func:`mark` is the same as :class:`Markup`.
    """
    if not spans:
        return escape_html(text)
    out: list[str] = []
    cursor = 0
    for start, end in merge_spans(s for s in spans if 0 <= s[0] < s[1] <= len(text)):
        out.append(escape_html(text[cursor:start]))
        out.append(f"<mark>{escape_html(text[start:end])}</mark>")
        cursor = end
    out.append(escape_html(text[cursor:]))
    return "".join(out)


def mark(text: str, spans: Iterable[tuple[int, int]]) -> Markup:
    """``text`` escaped, with each span wrapped in ``<mark>``, as Markup for autoescaping templates."""
    return Markup(marked_html(text, spans))


def spans_for(highlights: Iterable[Highlight], field: str) -> list[tuple[int, int]]:
    return [(h.start, h.end) for h in highlights if h.field == field]


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to about ``limit`` characters at a sentence end, else at a word boundary."""
    if len(text) <= limit:
        return text
    window = text[:limit]
    # A two-character search runs through the whole window when it finds nothing; "?" and "!"
    # are rare in an abstract, and a one-character test for them is a fast scan.
    sentence_end = window.rfind(". ")
    if "?" in window:
        sentence_end = max(sentence_end, window.rfind("? "))
    if "!" in window:
        sentence_end = max(sentence_end, window.rfind("! "))
    if sentence_end >= limit * 0.6:
        return window[: sentence_end + 1]
    space = window.rfind(" ")
    return (window[:space] if space > 0 else window).rstrip(",;: ") + "…"
