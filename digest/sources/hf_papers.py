"""Hugging Face Daily Papers: ``GET {base_url}/api/daily_papers?date=D&limit=N&p=K``.

``parse`` turns one page of the API's JSON into items and warnings (a malformed entry is skipped,
never fatal); ``HfPapersSource.fetch`` pages through each day of the window until a page comes
back short or empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import httpx

from digest.models import Item
from digest.settings import HfPapersSettings
from digest.sources import FetchResult
from digest.text import squash_whitespace

log = logging.getLogger(__name__)

NAME = "hf_papers"
MAX_PAGES = 50  # 2,500 papers a day: far past any real day, but a bound against a looping server


def parse(payload: Any, base_url: str, listed_on: date) -> tuple[list[Item], list[str]]:
    """Items from one page of ``/api/daily_papers``; entries that do not fit are reported, not raised."""
    if not isinstance(payload, list):
        raise ValueError(f"expected a JSON array, got {type(payload).__name__}")
    items: list[Item] = []
    warnings: list[str] = []
    for position, entry in enumerate(payload):
        try:
            items.append(_item(entry, base_url, listed_on))
        except (KeyError, TypeError, ValueError) as exc:
            warnings.append(f"{listed_on} entry {position}: skipped malformed paper ({exc!r})")
    return items, warnings


def _item(entry: Any, base_url: str, listed_on: date) -> Item:
    paper = entry["paper"]
    paper_id = paper["id"]
    title = paper.get("title") or entry.get("title")
    if not isinstance(paper_id, str) or not paper_id.strip():
        raise ValueError("paper.id is missing")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("paper.title is missing")
    organization = paper.get("organization")
    org_name = None
    if isinstance(organization, dict):
        org_name = organization.get("fullname") or organization.get("name")
    elif isinstance(organization, str):
        org_name = organization
    listed = _date(paper.get("submittedOnDailyAt")) or listed_on
    return Item(
        id=paper_id.strip(),
        source=NAME,
        title=squash_whitespace(title),
        abstract=squash_whitespace(paper.get("summary") or ""),
        url=f"{base_url}/papers/{paper_id.strip()}",
        listed_on=listed,
        authors=tuple(a["name"].strip() for a in paper.get("authors") or () if isinstance(a, dict) and a.get("name")),
        published_at=_datetime(paper.get("publishedAt")),
        upvotes=int(paper.get("upvotes") or 0),
        comments=int(entry.get("numComments") or 0),
        thumbnail=entry.get("thumbnail") or None,
        github_repo=paper.get("githubRepo") or None,
        ai_keywords=tuple(str(k) for k in paper.get("ai_keywords") or ()),
        organization=org_name,
        withdrawn=bool(paper.get("withdrawnAt")),
    )


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


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
            except (httpx.HTTPError, ValueError) as exc:
                message = f"{NAME} {day}: {_describe(exc)}"
                log.warning("fetch failed: %s", message)
                result.failed_days.append(day)
                result.errors.append(message)
                continue
            result.items.extend(items)
            result.warnings.extend(warnings)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result

    def fetch_day(self, client: httpx.Client, day: date) -> tuple[list[Item], list[str]]:
        url = f"{self.settings.base_url}/api/daily_papers"
        limit = self.settings.page_size
        items: list[Item] = []
        warnings: list[str] = []
        for page in range(MAX_PAGES):
            response = client.get(url, params={"date": day.isoformat(), "limit": limit, "p": page})
            response.raise_for_status()
            try:
                payload = response.json()
            except ValueError as exc:
                raise ValueError(f"answer to {response.url} is not JSON") from exc
            page_items, page_warnings = parse(payload, self.settings.base_url, day)
            items.extend(page_items)
            warnings.extend(page_warnings)
            if len(payload) < limit:
                break
        return items, warnings


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)
