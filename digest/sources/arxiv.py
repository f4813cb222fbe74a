"""arXiv's category feeds: ``GET {base_url}/rss/cs.CV+cs.LG`` (RSS 2.0; the ``/atom/`` twin parses too).

Each feed holds the latest announcement only. An item looks like::

    <item>
      <title>…</title>
      <link>https://arxiv.org/abs/2411.01234</link>
      <description>arXiv:2411.01234v1 Announce Type: new
    Abstract: …</description>
      <guid isPermaLink="false">oai:arXiv.org:2411.01234v1</guid>
      <category>cs.CV</category> <category>cs.LG</category>
      <pubDate>Mon, 04 Nov 2024 00:00:00 -0500</pubDate>
      <arxiv:announce_type>new</arxiv:announce_type>
      <dc:creator>Ada Lovelace, Alan Turing</dc:creator>
    </item>

``announce_type`` is ``new``, ``cross`` (cross-listed from another category), ``replace`` or
``replace-cross`` (a new version of an older paper); replacements are skipped unless asked for.
An item's identity is the bare arXiv id without its version — the same id Hugging Face uses — so
one paper from both sources becomes one item (see :mod:`digest.sources.merge`); its date is the
announcement date (``pubDate``). arXiv announces Sunday to Thursday evenings (US Eastern) and not
on its holidays: an empty feed on those days is a normal answer, not an error.

Politeness (arXiv's terms of use): at most one request every 3 seconds and one connection at a
time, across the whole process — :data:`GATE` is shared by every arXiv source.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from digest.errors import FeedFormatError
from digest.models import Item
from digest.settings import ArxivSettings
from digest.sources import FetchResult
from digest.sources.conditional import ConditionalFetcher, StateBook
from digest.sources.feed import describe, read_xml
from digest.text import squash_whitespace

log = logging.getLogger(__name__)

NAME = "arxiv"
ABS_URL = "https://arxiv.org/abs/"
KEPT = frozenset({"new", "cross"})
REPLACEMENTS = frozenset({"replace", "replace-cross"})
# New-style ids (2411.01234) and old-style ones (math.AG/0601001, hep-th/9901001), version dropped.
ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?")
_ANNOUNCE = re.compile(r"Announce Type:\s*([a-z-]+)", re.IGNORECASE)
_ABSTRACT = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*[a-z-]+\s*(?:Abstract:\s*)?", re.IGNORECASE)


class RequestSpacer:
    """One request at a time, and ``interval`` seconds from the end of one to the start of the next.

    Measuring from the end (not the start) keeps the spacing even when a response is slow, and the
    lock makes the connection exclusive across threads (the scheduler and a CLI run in one process).
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._last_end: float | None = None

    @contextmanager
    def turn(self, interval: float) -> Iterator[None]:
        with self._lock:
            if self._last_end is not None:
                wait = self._last_end + interval - self.clock()
                if wait > 0:
                    self.sleep(wait)
            try:
                yield
            finally:
                self._last_end = self.clock()


GATE = RequestSpacer()


def feed_url(base_url: str, categories: Sequence[str]) -> str:
    return f"{base_url}/rss/{'+'.join(categories)}"


def bare_id(text: str) -> str | None:
    """``2411.01234`` out of ``oai:arXiv.org:2411.01234v2``, ``https://arxiv.org/abs/2411.01234v2`` …"""
    found = ARXIV_ID.search(text)
    return found.group(1) if found else None


def parse(
    payload: bytes, include_replacements: bool = False, fetched_on: date | None = None
) -> tuple[list[Item], list[str]]:
    """Items of one arXiv category feed; entries that do not fit are reported, not raised.

    A paper with neither its own date nor the feed's counts as listed on ``fetched_on`` (when
    given) rather than being skipped: only a missing id or title costs a paper.
    Raises :class:`FeedFormatError` when the payload is not a feed at all.
    """
    document, warnings = read_xml(payload)
    announced = _when(document.feed.get("published") or document.feed.get("updated"))
    items: list[Item] = []
    for position, entry in enumerate(document.entries):
        kind = _announce_type(entry)
        if kind in REPLACEMENTS and not include_replacements:
            continue
        if kind not in KEPT | REPLACEMENTS:
            warnings.append(f"entry {position + 1}: unknown announce type {kind!r}; kept")
        try:
            items.append(_item(entry, announced, fetched_on))
        except ValueError as exc:
            warnings.append(f"entry {position + 1}: skipped ({exc})")
    return items, warnings


def _announce_type(entry: Any) -> str:
    declared = entry.get("arxiv_announce_type")
    if isinstance(declared, str):
        return declared.strip().lower()
    found = _ANNOUNCE.search(entry.get("summary") or "")  # another namespace prefix: read the description
    return found.group(1).lower() if found else "new"


def _item(entry: Any, announced: datetime | None, fetched_on: date | None = None) -> Item:
    paper_id = next(
        (
            found
            for text in (entry.get("id"), entry.get("link"), entry.get("summary"))
            if text and (found := bare_id(text))
        ),
        None,
    )
    if paper_id is None:
        raise ValueError("no arXiv id in guid, link or description")
    title = squash_whitespace(entry.get("title") or "")
    if not title:
        raise ValueError(f"{paper_id} has no title")
    when = _when(entry.get("published") or entry.get("updated")) or announced
    listed_on = when.date() if when is not None else fetched_on
    if listed_on is None:
        raise ValueError(f"{paper_id} has no announcement date")
    creators = entry.get("author") or ""
    authors = [squash_whitespace(a) for a in re.split(r",|\band\b", creators)] if creators else []
    if not authors:
        authors = [squash_whitespace(a["name"]) for a in entry.get("authors") or () if a.get("name")]
    return Item(
        id=paper_id,
        source=NAME,
        title=title,
        # arXiv's description is plain text (TeX included), not HTML: keep "a<b" as it is.
        abstract=squash_whitespace(_ABSTRACT.sub("", entry.get("summary") or "", count=1)),
        url=ABS_URL + paper_id,
        listed_on=listed_on,
        authors=tuple(a for a in authors if a),
        published_at=when,
        categories=tuple(dict.fromkeys(t["term"].strip() for t in entry.get("tags") or () if t.get("term"))),
    )


def _when(raw: Any) -> datetime | None:
    """A feed date in its own offset (RSS: RFC 822, Atom: ISO 8601): midnight Eastern stays that day."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ArxivSource:
    """The configured categories in one request. Its window is "now": the latest announcement."""

    name = NAME

    def __init__(
        self,
        settings: ArxivSettings,
        book: StateBook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        gate: RequestSpacer = GATE,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.fetcher = ConditionalFetcher(NAME, book, now)

    @property
    def url(self) -> str:
        return feed_url(self.settings.base_url, self.settings.categories)

    def fetch(self, client: httpx.Client, days: Sequence[date]) -> FetchResult:
        result = FetchResult()
        try:
            interval = self.settings.min_interval_seconds
            with self.gate.turn(interval):
                # A retry inside this turn must keep arXiv's spacing too.
                response = self.fetcher.get(client, self.url, min_retry_delay=interval)
            if response is None:
                log.info("arxiv: no new announcement since the last cycle (304)")
                return result
            items, warnings = parse(response.body, self.settings.include_replacements, max(days))
        except (httpx.HTTPError, FeedFormatError) as exc:
            message = f"{NAME} ({self.url}): {describe(exc)}"
            log.warning("fetch failed: %s", message)
            result.failed_days.append(max(days))
            result.errors.append(message)
            return result
        self.fetcher.remember(response, None)
        if not items:
            log.info("arxiv: the feed lists no papers (no announcement on weekends and arXiv holidays)")
        result.items.extend(items)
        result.warnings.extend(f"{NAME} ({self.url}): {w}" for w in warnings)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result
