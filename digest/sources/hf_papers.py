"""Hugging Face Daily Papers: ``GET {base_url}/api/daily_papers?date=D&limit=N&p=K``.

``parse`` turns one page of the API's JSON into items and warnings. Only a paper without an id or
a title is skipped (with a warning naming its place in the day's list); every other field is read
leniently — ``upvotes: "1.2k"``, ``authors: 7`` or ``summary: 12345`` must not cost anyone a paper.

``HfPapersSource.fetch`` pages through each day of the window until a page comes back short or
empty. A day that cannot be read whole — a server that repeats a page (ignoring ``p=``), or one
that is still sending full pages after :data:`MAX_PAPERS_PER_DAY` papers — fails for that day:
the papers read so far are kept, and the day is fetched again next cycle like any failed day,
so no day is ever marked done with papers missing.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from digest.models import Item
from digest.settings import HfPapersSettings
from digest.sources import FetchResult
from digest.sources.markup import web_url
from digest.text import squash_whitespace

log = logging.getLogger(__name__)

NAME = "hf_papers"
# A bound against a server that never stops sending full pages, in papers rather than pages so a
# small page_size does not lower it. Real days list tens of papers, a busy one a few hundred.
MAX_PAPERS_PER_DAY = 10_000
_COUNT = re.compile(r"\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([kmb]?)\+?\s*", re.IGNORECASE)
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


class IncompleteDay(ValueError):
    """A day that could not be read whole; ``items`` and ``warnings`` are what was read of it."""

    def __init__(self, message: str, items: list[Item], warnings: list[str]) -> None:
        super().__init__(message)
        self.items = items
        self.warnings = warnings


def parse(payload: Any, base_url: str, listed_on: date, offset: int = 0) -> tuple[list[Item], list[str]]:
    """Items from one page of ``/api/daily_papers``; entries that do not fit are reported, not raised.

    ``offset`` is the page's place in the day's list, so a warning names the entry's place in the day.
    """
    if not isinstance(payload, list):
        raise ValueError(f"expected a JSON array, got {type(payload).__name__}")
    items: list[Item] = []
    warnings: list[str] = []
    for position, entry in enumerate(payload, start=offset):
        try:
            items.append(_item(entry, base_url, listed_on))
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            warnings.append(f"{listed_on} entry {position}: skipped malformed paper ({exc})")
    return items, warnings


def _item(entry: Any, base_url: str, listed_on: date) -> Item:
    """One paper; raises ValueError only when the entry has no usable id or title."""
    if not isinstance(entry, dict):
        raise ValueError(f"the entry is a JSON {type(entry).__name__}, not an object with a paper")
    paper = entry.get("paper")
    if not isinstance(paper, dict):
        raise ValueError("paper is missing")
    paper_id = _paper_id(paper.get("id"))
    title = _text(paper.get("title")) or _text(entry.get("title"))
    if not title:
        raise ValueError(f"paper {paper_id} has no title")
    submitted = _date(paper.get("submittedOnDailyAt"))
    # The day the API lists the paper on, unless its own stamp says a neighbouring day (time zones):
    # a stamp far off would move the paper out of every window, and so out of every digest.
    listed = submitted if submitted is not None and abs((submitted - listed_on).days) <= 1 else listed_on
    withdrawn = paper.get("withdrawnAt")
    return Item(
        id=paper_id,
        source=NAME,
        title=title,
        abstract=_text(paper.get("summary")),
        url=f"{base_url}/papers/{quote(paper_id)}",
        listed_on=listed,
        authors=_authors(paper.get("authors")),
        published_at=_datetime(paper.get("publishedAt")),
        upvotes=_count(paper.get("upvotes")),
        comments=_count(entry.get("numComments")),
        thumbnail=web_url(entry.get("thumbnail")),
        github_repo=web_url(paper.get("githubRepo")),  # an href in the email: http(s) only
        ai_keywords=_keywords(paper.get("ai_keywords")),
        organization=_organization(paper.get("organization")),
        ai_summary=_text(paper.get("ai_summary")),
        withdrawn=withdrawn is True or (isinstance(withdrawn, str) and bool(withdrawn.strip())),
    )


def _paper_id(value: Any) -> str:
    """A string, or an integer written as one; a float is refused: 2611.0123 and 2611.01230 are one number."""
    if isinstance(value, float):
        raise ValueError(f"paper.id is the number {value!r}; an arXiv id must come as a string")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ValueError("paper.id is missing")
    return text


def _text(value: Any) -> str:
    """Text with its whitespace folded; a number becomes its digits, anything else nothing."""
    if isinstance(value, str):
        return squash_whitespace(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _count(value: Any) -> int:
    """Upvotes or comments: 42, 42.0, "42", "1,234", "1.2k" (1200), "3M+"; anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float):
        return max(int(value), 0) if math.isfinite(value) else 0
    if isinstance(value, str) and (found := _COUNT.fullmatch(value)):
        return int(Decimal(found.group(1).replace(",", "")) * _SCALE[found.group(2).lower()])
    return 0


def _authors(value: Any) -> tuple[str, ...]:
    """Names from ``[{"name": …}, …]``; plain strings in the list count as names too."""
    if not isinstance(value, list):
        return ()
    names = (_text(a.get("name")) if isinstance(a, dict) else _text(a) if isinstance(a, str) else "" for a in value)
    return tuple(name for name in names if name)


def _keywords(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(word for word in map(_text, value) if word)


def _organization(value: Any) -> str | None:
    """``{"fullname": …, "name": …}`` or a plain string; anything else is no organization."""
    names = [value.get("fullname"), value.get("name")] if isinstance(value, dict) else [value]
    return next((_text(name) for name in names if isinstance(name, str) and name.strip()), None)


def _datetime(value: Any) -> datetime | None:
    """An ISO 8601 moment (UTC when it gives no offset); anything else is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date(value: Any) -> date | None:
    moment = _datetime(value)
    return moment.date() if moment else None


class HfPapersSource:
    """Fetches each day of a window, page by page."""

    name = NAME

    def __init__(self, settings: HfPapersSettings) -> None:
        self.settings = settings

    def fetch(self, client: httpx.Client, days: Sequence[date]) -> FetchResult:
        result = FetchResult()
        for day in days:
            try:
                items, warnings = self.fetch_day(client, day)
            except IncompleteDay as exc:
                # Keep what was read (it is delivered now), and fail the day so it is read again.
                result.items.extend(exc.items)
                result.warnings.extend(exc.warnings)
                self._failed(result, day, str(exc))
                continue
            except (httpx.HTTPError, ValueError) as exc:
                self._failed(result, day, _describe(exc))
                continue
            result.items.extend(items)
            result.warnings.extend(warnings)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result

    @staticmethod
    def _failed(result: FetchResult, day: date, problem: str) -> None:
        message = f"{NAME} {day}: {problem}"
        log.warning("fetch failed: %s", message)
        result.failed_days.append(day)
        result.errors.append(message)

    def fetch_day(self, client: httpx.Client, day: date) -> tuple[list[Item], list[str]]:
        """Every paper of ``day``; raises :class:`IncompleteDay` when the pages do not add up to a whole day."""
        url = f"{self.settings.base_url}/api/daily_papers"
        limit = self.settings.page_size
        items: list[Item] = []
        warnings: list[str] = []
        seen: set[str] = set()
        pages = MAX_PAPERS_PER_DAY // limit + 1  # a day of MAX_PAPERS_PER_DAY ends on a short page
        for page in range(pages):
            response = client.get(url, params={"date": day.isoformat(), "limit": limit, "p": page})
            response.raise_for_status()
            try:
                payload = response.json()
            except ValueError as exc:
                raise ValueError(f"answer to {response.url} is not JSON") from exc
            page_items, page_warnings = parse(payload, self.settings.base_url, day, offset=page * limit)
            fresh = [item for item in page_items if item.id not in seen]
            seen.update(item.id for item in fresh)
            items.extend(fresh)
            warnings.extend(page_warnings)
            if len(payload) < limit:
                return items, warnings
            if page_items and not fresh:
                raise IncompleteDay(
                    f"{response.url} is a full page of papers already read on earlier pages (does the server "
                    f"ignore p=?); kept the {len(items)} papers read, the day will be fetched again next cycle",
                    items,
                    warnings,
                )
        raise IncompleteDay(
            f"still full pages after {pages} pages ({len(items)} papers, last {response.url}); a day of more "
            f"than {MAX_PAPERS_PER_DAY:,} papers is not read whole: kept those read, the day will be fetched "
            "again next cycle",
            items,
            warnings,
        )


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)
