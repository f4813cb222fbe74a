"""The bundled sample of real listings, served as if it came from the Hugging Face API.

``digest demo`` falls back to it when the network is unreachable, so the Quick start works on a
machine with no internet. It goes through the same :func:`hf_papers.parse` as live data.

The saved pages it was built from carry no arXiv ids, so its ids are made up (the file says so:
``"ids_made_up": true``). A link built from such an id would go nowhere, or to another paper
(``2611.84734`` for Video-Infinity, which is 2406.13527): the first email a new user sees links
each paper to an arXiv search for its title instead (:func:`with_search_links`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import quote_plus

import httpx

from digest.models import Item
from digest.sources import FetchResult
from digest.sources.hf_papers import NAME, parse

SAMPLE_BASE_URL = "https://huggingface.co"
SEARCH_URL = "https://arxiv.org/search/?searchtype=title&query="


@lru_cache(maxsize=1)
def _sample() -> dict[str, Any]:
    text = resources.files("digest").joinpath("data/sample.json").read_text(encoding="utf-8")
    sample: dict[str, Any] = json.loads(text)
    return sample


def sample_days() -> dict[str, list[dict[str, Any]]]:
    """The sample as ``{"YYYY-MM-DD": [API entries]}``."""
    days: dict[str, list[dict[str, Any]]] = _sample()["days"]
    return days


def search_url(title: str) -> str:
    """An arXiv search for a paper's title: an honest link for a paper whose id is not known."""
    return SEARCH_URL + quote_plus(" ".join(title.split()))


def with_search_links(items: Iterable[Item]) -> list[Item]:
    """The sample's items, each linking to a search for its title when the sample's ids are made up."""
    if not _sample().get("ids_made_up"):
        return list(items)
    return [replace(item, url=search_url(item.title)) for item in items]


def sample_last_day() -> date:
    return max(date.fromisoformat(d) for d in sample_days())


class SampleSource:
    name = NAME

    def fetch(self, client: httpx.Client, days: Sequence[date]) -> FetchResult:
        result = FetchResult()
        for day in days:
            items, warnings = parse(sample_days().get(day.isoformat(), []), SAMPLE_BASE_URL, day)
            result.items.extend(with_search_links(items))
            result.warnings.extend(warnings)
        return result
