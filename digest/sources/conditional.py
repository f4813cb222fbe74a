"""Polite feed fetching: conditional GET (ETag / Last-Modified) and the freshness a feed asks for.

A feed that has not changed answers ``304 Not Modified`` with no body; a feed that says how long
it stays fresh (RSS ``<ttl>`` in minutes, ``Cache-Control: max-age``) is not asked again before
then. That freshness is capped below a day, so a daily schedule always fetches: digest never asks
more often than its schedule, and never skips a scheduled day because a feed asked for a week.

The validators are kept per source in the store (see :class:`StateBook`) and are written with the
items of the same cycle, after the payload was parsed: a feed that failed to parse is fetched in
full next time instead of answering 304 for items digest never kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from digest.sources.http import MIN_RETRY_DELAY

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
FRESHNESS_CAP = timedelta(hours=20)
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


class StateBook(Protocol):
    """Where a source keeps a little state between cycles (the store implements it)."""

    def source_state(self, source: str) -> dict[str, Any]: ...

    def set_source_state(self, source: str, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class FeedResponse:
    requested: str  # the configured URL, which the validators belong to (``url`` is after redirects)
    body: bytes
    content_type: str
    url: str
    etag: str | None
    last_modified: str | None
    max_age_seconds: int | None


def validators(state: dict[str, Any]) -> dict[str, str]:
    """The conditional-request headers for what we saw last time."""
    headers = {}
    if isinstance(state.get("etag"), str):
        headers["If-None-Match"] = state["etag"]
    if isinstance(state.get("last_modified"), str):
        headers["If-Modified-Since"] = state["last_modified"]
    return headers


def max_age(cache_control: str | None) -> int | None:
    """Seconds from ``Cache-Control``; ``no-cache``/``no-store`` mean none at all."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-cache" in lowered or "no-store" in lowered:
        return 0
    found = _MAX_AGE.search(cache_control)
    return int(found.group(1)) if found else None


def fresh_until(fetched_at: datetime, max_age_seconds: int | None, ttl_minutes: int | None) -> datetime | None:
    """Until when the feed asked not to be fetched again (the longer of its two hints, capped)."""
    hints = [timedelta(seconds=max_age_seconds or 0), timedelta(minutes=ttl_minutes or 0)]
    longest = min(max(hints), FRESHNESS_CAP)
    return fetched_at + longest if longest > timedelta(0) else None


class ConditionalFetcher:
    """One source's conditional GETs, with its validators kept in a :class:`StateBook`."""

    def __init__(self, name: str, book: StateBook | None, now: Callable[[], datetime]) -> None:
        self.name = name
        self.book = book
        self.now = now

    def state(self) -> dict[str, Any]:
        return self.book.source_state(self.name) if self.book is not None else {}

    def fresh(self) -> datetime | None:
        """The time until which the feed is still fresh, if that is later than now."""
        value = self.state().get("fresh_until")
        if not isinstance(value, str):
            return None
        try:
            until = datetime.fromisoformat(value)
        except ValueError:
            return None
        return until if until > self.now() else None

    def get(self, client: httpx.Client, url: str, min_retry_delay: float = 0.0) -> FeedResponse | None:
        """The feed's payload, or None when the server says it has not changed (304)."""
        state = self.state()
        if state.get("url") != url:  # validators from another URL (the feed was re-pointed) mean nothing here
            state = {}
        response = client.get(
            url,
            headers={"Accept": FEED_ACCEPT, **validators(state)},
            extensions={MIN_RETRY_DELAY: min_retry_delay},
        )
        if response.status_code == 304:
            self._save(
                {**state, "fetched_at": self.now().isoformat()},
                max_age(response.headers.get("cache-control")),
                state.get("ttl_minutes"),
            )
            return None
        response.raise_for_status()
        return FeedResponse(
            requested=url,
            body=response.content,
            content_type=response.headers.get("content-type", ""),
            url=str(response.url),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            max_age_seconds=max_age(response.headers.get("cache-control")),
        )

    def remember(self, response: FeedResponse, ttl_minutes: int | None) -> None:
        """Keep the validators of a payload that parsed, for the next cycle's conditional GET."""
        state = {
            "url": response.requested,
            "etag": response.etag,
            "last_modified": response.last_modified,
            "ttl_minutes": ttl_minutes,
        }
        self._save(state, response.max_age_seconds, ttl_minutes)

    def _save(self, state: dict[str, Any], max_age_seconds: int | None, ttl_minutes: Any) -> None:
        if self.book is None:
            return
        now = self.now()
        ttl = ttl_minutes if isinstance(ttl_minutes, int) else None
        until = fresh_until(now, max_age_seconds, ttl)
        state = {k: v for k, v in state.items() if v is not None}
        state["fetched_at"] = now.isoformat()
        state.pop("fresh_until", None)
        if until is not None:
            state["fresh_until"] = until.isoformat()
        self.book.set_source_state(self.name, state)
