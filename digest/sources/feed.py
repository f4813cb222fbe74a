"""Any feed: RSS 0.9x/1.0/2.0 and Atom through feedparser, JSON Feed (1.0 and 1.1) by hand.

``parse`` is pure: a payload in, items and warnings out. An item's identity is the entry's
guid/id, else its link, else a hash of its title and content, always prefixed with the feed's
name (``blog:tag:example.org,2026:1``), so two feeds can never claim each other's entries.
A feed entry counts as listed on the day digest first sees it: feed dates are often missing or
wrong, and an entry is news to the subscriber when it appears, not when its author drafted it.

``FeedSource.fetch`` asks with ETag / Last-Modified (see :mod:`digest.sources.conditional`) and
reads nothing when the server answers 304. A payload that is not a feed at all (an HTML error
page, broken XML with no entry in it) fails this source for the day with a message naming the
feed and the URL; other sources are unaffected.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import feedparser
import httpx

from digest.errors import FeedFormatError
from digest.models import Item
from digest.settings import FeedSettings
from digest.sources import FetchResult
from digest.sources.conditional import ConditionalFetcher, StateBook
from digest.sources.markup import html_to_text, web_url
from digest.text import squash_whitespace

log = logging.getLogger(__name__)

ABSTRACT_CHARS = 5000  # enough to match rules on; a whole blog post would only bloat the store
UNTITLED_CHARS = 90
CATEGORIES_KEPT = 20
_HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")


@dataclass(slots=True)
class ParsedFeed:
    items: list[Item] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ttl_minutes: int | None = None


_HARMLESS = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)  # wrong headers, fine XML
_COMPLETE = re.compile(rb"</(?:[A-Za-z][\w.-]*:)?(?:rss|feed|RDF)\s*>\s*$")


@dataclass(frozen=True, slots=True)
class _Entry:
    """The fields digest keeps from one entry, whatever the feed format."""

    key: str | None
    link: str | None
    title: str
    text: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]
    published_at: datetime | None


def parse(payload: bytes, name: str, listed_on: date, content_type: str = "") -> ParsedFeed:
    """Items of one feed document. Raises :class:`FeedFormatError` when it is not a feed."""
    if _looks_like_json(payload, content_type):
        entries, home = _json_feed(payload)
        warnings: list[str] = []
        ttl = None
    else:
        entries, home, warnings, ttl = _xml_feed(payload, content_type)
    parsed = ParsedFeed(warnings=warnings, ttl_minutes=ttl)
    for position, entry in enumerate(entries):
        item = _item(entry, name, listed_on, home)
        if item is None:
            parsed.warnings.append(f"entry {position + 1} has no id, link, title or text; skipped")
        else:
            parsed.items.append(item)
    return parsed


def _looks_like_json(payload: bytes, content_type: str) -> bool:
    return "json" in content_type.lower() or payload.lstrip()[:1] == b"{"


# -- XML: RSS and Atom ----------------------------------------------------------------------------
def read_xml(payload: bytes, content_type: str = "") -> tuple[Any, list[str]]:
    """feedparser's reading of an RSS/Atom payload, and a warning if it had to guess.

    feedparser reads broken XML leniently, which is right for a complete document with a stray
    ``&nbsp;``; but a document cut short would yield half an entry — perhaps without the guid it
    will have tomorrow, and so delivered twice. A broken document is therefore kept only when it
    ends with its root's closing tag.
    """
    document = feedparser.parse(
        payload,
        response_headers={"content-type": content_type or "application/xml"},
        sanitize_html=False,  # we keep text only (see markup.html_to_text); its sanitiser eats "a<b" in text
        resolve_relative_uris=False,
    )
    problem = document.get("bozo_exception") if document.get("bozo") else None
    if isinstance(problem, _HARMLESS):
        problem = None
    if not document.entries and not document.get("version"):
        sent = content_type.split(";")[0].strip()
        detail = f"the server sent {sent}" if sent and "xml" not in sent else problem
        raise FeedFormatError(f"not an RSS, Atom or JSON feed{f' ({detail})' if detail else ''}")
    if problem is None:
        return document, []
    if not _COMPLETE.search(payload[-256:]):
        raise FeedFormatError(f"malformed feed, cut short or broken ({problem}); nothing was kept")
    count = len(document.entries)
    return document, [f"malformed feed ({problem}); kept the {count} entries that could be read"]


def _xml_feed(payload: bytes, content_type: str) -> tuple[list[_Entry], str | None, list[str], int | None]:
    document, warnings = read_xml(payload, content_type)
    entries = [_from_feedparser(e) for e in document.entries]
    return entries, web_url(document.feed.get("link")), warnings, _ttl(document.feed.get("ttl"))


def _from_feedparser(entry: Any) -> _Entry:
    title_detail = entry.get("title_detail") or {}
    title = _text(entry.get("title"), title_detail.get("type"))
    text = ""
    for content in entry.get("content") or ():
        text = _text(content.get("value"), content.get("type"))
        if text:
            break
    if not text:
        summary_detail = entry.get("summary_detail") or {}
        text = _text(entry.get("summary"), summary_detail.get("type", "text/html"))
    authors = tuple(
        squash_whitespace(a["name"]) for a in entry.get("authors") or () if isinstance(a, dict) and a.get("name")
    )
    tags = tuple(squash_whitespace(t["term"]) for t in entry.get("tags") or () if isinstance(t, dict) and t.get("term"))
    moment = entry.get("published_parsed") or entry.get("updated_parsed")
    return _Entry(
        key=_str(entry.get("id")),
        link=web_url(entry.get("link")),
        title=title,
        text=text,
        authors=authors,
        categories=tags,
        published_at=_from_struct(moment),
    )


def _text(value: Any, kind: Any) -> str:
    if not isinstance(value, str):
        return ""
    if isinstance(kind, str) and kind.lower() in _HTML_TYPES:
        return html_to_text(value)
    return squash_whitespace(value)


def _from_struct(moment: Any) -> datetime | None:
    if not isinstance(moment, time.struct_time):
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(moment), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _ttl(value: Any) -> int | None:
    try:
        minutes = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes if minutes > 0 else None


# -- JSON Feed (https://jsonfeed.org/version/1.1) ------------------------------------------------
def _json_feed(payload: bytes) -> tuple[list[_Entry], str | None]:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedFormatError(f"not an RSS, Atom or JSON feed: JSON does not parse ({exc})") from exc
    version = document.get("version") if isinstance(document, dict) else None
    if not isinstance(version, str) or not version.startswith("https://jsonfeed.org/version/"):
        raise FeedFormatError("JSON without a JSON Feed version (https://jsonfeed.org/version/1.1)")
    items = document.get("items")
    if not isinstance(items, list):
        raise FeedFormatError("JSON Feed without an items list")
    entries = [_from_json(entry) for entry in items if isinstance(entry, dict)]
    return entries, web_url(document.get("home_page_url"))


def _from_json(entry: dict[str, Any]) -> _Entry:
    if isinstance(entry.get("content_text"), str) and entry["content_text"].strip():
        text = squash_whitespace(entry["content_text"])
    elif isinstance(entry.get("content_html"), str):
        text = html_to_text(entry["content_html"])
    else:
        text = squash_whitespace(entry["summary"]) if isinstance(entry.get("summary"), str) else ""
    people = entry.get("authors")
    if not isinstance(people, list):
        people = [entry["author"]] if isinstance(entry.get("author"), dict) else []  # JSON Feed 1.0
    authors = tuple(
        squash_whitespace(p["name"]) for p in people if isinstance(p, dict) and isinstance(p.get("name"), str)
    )
    tags: list[Any] = entry["tags"] if isinstance(entry.get("tags"), list) else []
    raw_id = entry.get("id")
    return _Entry(
        key=str(raw_id) if isinstance(raw_id, int | float) else _str(raw_id),
        link=web_url(entry.get("url")) or web_url(entry.get("external_url")),
        title=squash_whitespace(entry["title"]) if isinstance(entry.get("title"), str) else "",
        text=text,
        authors=authors,
        categories=tuple(squash_whitespace(t) for t in tags if isinstance(t, str) and t.strip()),
        published_at=_from_iso(entry.get("date_published")) or _from_iso(entry.get("date_modified")),
    )


def _from_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- one entry → one item ------------------------------------------------------------------------
def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def identity(name: str, key: str | None, link: str | None, title: str, text: str) -> str | None:
    """``name:`` + guid/id, else link, else a hash of title and content; None when there is nothing."""
    if key:
        return f"{name}:{key}"
    if link:
        return f"{name}:{link}"
    if title or text:
        digest = hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:24]
        return f"{name}:sha256:{digest}"
    return None


def _item(entry: _Entry, name: str, listed_on: date, home: str | None) -> Item | None:
    item_id = identity(name, entry.key, entry.link, entry.title, entry.text)
    if item_id is None:
        return None
    title = entry.title or _untitled(entry.text) or entry.link or "(untitled)"
    return Item(
        id=item_id,
        source=name,
        title=title,
        abstract=entry.text[:ABSTRACT_CHARS],
        url=entry.link or web_url(entry.key) or home or "",
        listed_on=listed_on,
        authors=entry.authors,
        published_at=entry.published_at,
        categories=tuple(dict.fromkeys(entry.categories))[:CATEGORIES_KEPT],
    )


def _untitled(text: str) -> str:
    if len(text) <= UNTITLED_CHARS:
        return text
    return text[:UNTITLED_CHARS].rsplit(" ", 1)[0] + "…"


# -- fetch -----------------------------------------------------------------------------------------
def describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


class FeedSource:
    """One configured feed. Its window is "now": a feed lists what it lists today."""

    def __init__(
        self,
        settings: FeedSettings,
        book: StateBook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.fetcher = ConditionalFetcher(settings.name, book, now)

    def fetch(self, client: httpx.Client, days: Sequence[date]) -> FetchResult:
        result = FetchResult()
        day = max(days)
        url = self.settings.url
        fresh = self.fetcher.fresh()
        if fresh is not None:
            log.info("feed %s: fresh until %s as the feed asked; not fetched", self.name, fresh.isoformat())
            return result
        try:
            response = self.fetcher.get(client, url)
            if response is None:
                log.info("feed %s: not modified since the last cycle", self.name)
                return result
            parsed = parse(response.body, self.name, day, response.content_type)
        except (httpx.HTTPError, FeedFormatError) as exc:
            message = f"feed {self.name} ({url}): {describe(exc)}"
            log.warning("fetch failed: %s", message)
            result.failed_days.append(day)
            result.errors.append(message)
            return result
        self.fetcher.remember(response, parsed.ttl_minutes)
        result.items.extend(parsed.items)
        result.warnings.extend(f"feed {self.name} ({url}): {w}" for w in parsed.warnings)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result
