"""Plain text out of a feed's HTML, and only web links out of its URLs.

Feeds put HTML in descriptions (RSS 2.0 escapes it, Atom marks it ``type="html"``). digest keeps
plain text only: the email escapes it like any other text and the rules match words, not tags.
Scripts, styles and the like are dropped with their content; block elements become spaces so
words from two paragraphs do not run together.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

from digest.text import squash_whitespace

_DROPPED = frozenset({"script", "style", "template", "noscript", "iframe", "object", "svg", "math", "head", "title"})
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
        "section", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.dropping += 1
        elif tag in _BLOCK:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropping = max(0, self.dropping - 1)
        elif tag in _BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The words of ``html``, entities decoded, whitespace folded; no markup survives."""
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    return squash_whitespace("".join(parser.parts))


def web_url(value: object) -> str | None:
    """``value`` if it is an absolute http(s) URL, else None: a feed must not put ``javascript:`` in a link."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc or any(c in url for c in "\r\n\t "):
        return None
    return url
