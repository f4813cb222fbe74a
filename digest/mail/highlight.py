"""Escape text from a feed and mark the matched words, for the HTML and text parts alike.

Also what a reader should not see of a feed's text: LaTeX that arXiv abstracts carry as typed
(``2.4\\times``, ````memory wall''``, ``models~(LLMs)``) and words a hard line break cut after
their hyphen (``Half-⏎precision``, squashed by the sources to ``Half- precision``), tidied by
:func:`tidy`; and the few words around a match the shown excerpt left out (:func:`snippet_window`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from markupsafe import Markup

from digest.matching.spans import merge_spans


def escape_html(text: str) -> str:
    """``str(markupsafe.escape(text))``: the five entities Jinja's autoescape writes, as a plain
    ``str`` (the callers join pieces around ``<mark>``, which a :class:`Markup` would escape too).

    Five ``str.replace`` calls rather than ``escape``, which makes and copies a Markup per value:
    a first render escapes hundreds. The tests hold the two to the same output.
    """
    return (
        text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;").replace("'", "&#39;").replace('"', "&#34;")
    )


# LaTeX commands arXiv abstracts keep as typed, and what a reader expects to see instead.
LATEX_SYMBOLS = {
    "times": "×",
    "sim": "~",
    "approx": "≈",
    "leq": "≤",
    "le": "≤",
    "geq": "≥",
    "ge": "≥",
    "pm": "±",
    "cdot": "·",
    "rightarrow": "→",
    "to": "→",
    "infty": "∞",
    "%": "%",
    "&": "&",
    "_": "_",
    "#": "#",
}
_COMMANDS = "|".join(re.escape(c) for c in sorted(LATEX_SYMBOLS, key=len, reverse=True))
_LATEX_COMMAND = re.compile(rf"\\({_COMMANDS})(?![A-Za-z])")
# Inline math that held nothing but such a symbol, a number or a letter: $\times$, $10^{3}$, $k$.
# Not "$5 and $10": math has no space just inside its dollars.
_SIMPLE_MATH = re.compile(r"\$(?! )([^$\\]{1,12})(?<! )\$")
# "models~(LLMs)", "Fig.~3": LaTeX's tie between two words (a "~" before a number, "~2x", is not one).
_TIE = re.compile(r"~(?<=[\w.)]~)(?=[\w(])")
# "1.48times lower", "8timesRTX": "\\times" whose backslash a feed dropped (no English word follows a digit so).
_TIMES = re.compile(r"times(?<=\dtimes)(?![a-z])")
# "Half- precision": a word cut after its hyphen by a line break that the source made a space. Not
# "short- and long-video" (a hyphen held over to the next word), so not before those small words.
_CUT_WORD = re.compile(r"- (?<=[^\W\d_]- )(?!(?:and|or|to|nor|vs|versus|as|but|&)\b)(?=[^\W_])")
# Each pattern above starts with its literal ("times", "~", "- "), its look-behind after it: the
# engine then skips to each place the literal stands, instead of trying the look-behind at every
# character (ten to forty times slower on an abstract).


def _untidy(text: str) -> bool:
    """Whether ``text`` holds anything :func:`tidy` rewrites: a few searches in C, where one regular
    expression for them all took five times as long."""
    return "\\" in text or "$" in text or "~" in text or "`" in text or "''" in text or "- " in text or "times" in text


def tidy(text: str) -> str:
    """``text`` as a reader should see it: LaTeX leftovers written as what they mean, and words cut
    after their hyphen joined again. Text with none of them (nearly every piece) is returned as it
    is, after a few searches (:func:`_untidy`)."""
    if not _untidy(text):
        return text
    if "times" in text:
        text = _TIMES.sub("×", text)
    if "\\" in text:
        text = _LATEX_COMMAND.sub(lambda m: LATEX_SYMBOLS[m.group(1)], text)
    if "$" in text:
        text = _SIMPLE_MATH.sub(lambda m: m.group(1).replace("{", "").replace("}", ""), text)
    if "``" in text or "''" in text:
        text = text.replace("``", "“").replace("''", "”")
    if "~" in text:
        text = _TIE.sub(" ", text)
    if "- " in text:
        text = _CUT_WORD.sub("-", text)
    return text


def _marked(text: str, spans: Iterable[tuple[int, int]], piece: Callable[[str], str], before: str, after: str) -> str:
    """``text`` with each span between ``before`` and ``after``, every other piece through ``piece``."""
    out: list[str] = []
    cursor = 0
    for start, end in merge_spans(s for s in spans if 0 <= s[0] < s[1] <= len(text)):
        out.append(piece(text[cursor:start]))
        out.append(before + piece(text[start:end]) + after)
        cursor = end
    out.append(piece(text[cursor:]))
    return "".join(out)


def marked_html(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` escaped, with each span wrapped in ``<mark>``; nothing from ``text`` stays raw.

    A plain ``str`` for callers that build HTML without autoescape; :func:`mark` is the same as
    :class:`Markup`.
    """
    if not spans:
        return escape_html(text)
    return _marked(text, spans, escape_html, "<mark>", "</mark>")


def _tidy_html(text: str) -> str:
    return escape_html(tidy(text))


def email_html(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """The email's :func:`marked_html`: tidied (:func:`tidy`), each span in ``<mark><b>``.

    ``<b>`` inside ``<mark>``: the mark's bold weight came from the ``<style>`` block alone, which
    Gmail (for other providers' accounts) and Outlook for Windows drop. Each piece between spans
    is tidied on its own, so the spans keep indexing the item's text as the matcher gave them.
    """
    if not _untidy(text):  # nearly always: no piece needs tidying
        return escape_html(text) if not spans else _marked(text, spans, escape_html, "<mark><b>", "</b></mark>")
    if not spans:
        return escape_html(tidy(text))
    return _marked(text, spans, _tidy_html, "<mark><b>", "</b></mark>")


def email_both(text: str, spans: list[tuple[int, int]]) -> tuple[str, str]:
    """:func:`email_html` of ``text``, and the same for the text part, each span between asterisks
    (``*4090*``, the plain-text way of emphasis), in one pass: a snippet is shown in both parts."""
    untidy = _untidy(text)
    html_piece = _tidy_html if untidy else escape_html
    text_piece = tidy if untidy else str
    html: list[str] = []
    plain: list[str] = []
    cursor = 0
    for start, end in merge_spans(s for s in spans if 0 <= s[0] < s[1] <= len(text)):
        before, word = text[cursor:start], text[start:end]
        html.append(f"{html_piece(before)}<mark><b>{html_piece(word)}</b></mark>")
        plain.append(f"{text_piece(before)}*{text_piece(word)}*")
        cursor = end
    html.append(html_piece(text[cursor:]))
    plain.append(text_piece(text[cursor:]))
    return "".join(html), "".join(plain)


def snippet_window(text: str, start: int, end: int, width: int) -> tuple[int, int]:
    """About ``width`` characters of ``text`` around ``text[start:end]``, cut at spaces.

    The match sits a third of the way in, so the words that lead to it are read first (the
    sentence a reader wants is usually "… on an RTX 4090 GPU"); the window never cuts a word.
    """
    begin = max(0, start - width // 3)
    stop = min(len(text), max(end, begin + width))
    if begin > 0:
        space = text.find(" ", begin, start)
        begin = space + 1 if space >= 0 else begin
    if stop < len(text):
        space = text.rfind(" ", end, stop)
        stop = space if space >= 0 else stop
    return begin, stop


def mark(text: str, spans: Iterable[tuple[int, int]]) -> Markup:
    """``text`` escaped, with each span wrapped in ``<mark>``, as Markup for autoescaping templates."""
    return Markup(marked_html(text, spans))


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
