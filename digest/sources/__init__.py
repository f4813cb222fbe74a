"""Sources of listings. Each source module has a pure ``parse`` and a thin fetch over ``httpx.Client``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import httpx

from digest import __version__
from digest.models import Item
from digest.retry import Retrier
from digest.sources.http import RetryingTransport

USER_AGENT = f"digest/{__version__} (self-hosted paper digest; +https://github.com/digest-bot/digest)"


@dataclass(slots=True)
class FetchResult:
    """What a source brought back for a window of days; failed days are retried by later cycles."""

    items: list[Item] = field(default_factory=list)
    failed_days: list[date] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Source(Protocol):
    name: str

    def fetch(self, client: httpx.Client, days: list[date]) -> FetchResult: ...


def make_client(
    timeout: float = 20.0, transport: httpx.BaseTransport | None = None, retrier: Retrier | None = None
) -> httpx.Client:
    """The one HTTP client a cycle uses: timeouts, a clear User-Agent, and retries when given a budget."""
    if retrier is not None:
        transport = RetryingTransport(retrier, transport)
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        follow_redirects=True,
        transport=transport,
    )
