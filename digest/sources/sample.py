"""The bundled sample of real listings, served as if it came from the Hugging Face API.

``digest demo`` falls back to it when the network is unreachable, so the Quick start works on a
machine with no internet. It goes through the same :func:`hf_papers.parse` as live data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

import httpx

from digest.sources import FetchResult
from digest.sources.hf_papers import NAME, parse

SAMPLE_BASE_URL = "https://huggingface.co"


@lru_cache(maxsize=1)
def sample_days() -> dict[str, list[dict[str, Any]]]:
    """The sample as ``{"YYYY-MM-DD": [API entries]}``."""
    text = resources.files("digest").joinpath("data/sample.json").read_text(encoding="utf-8")
    days: dict[str, list[dict[str, Any]]] = json.loads(text)["days"]
    return days


def sample_last_day() -> date:
    return max(date.fromisoformat(d) for d in sample_days())


class SampleSource:
    name = NAME

    def fetch(self, client: httpx.Client, days: Sequence[date]) -> FetchResult:
        result = FetchResult()
        for day in days:
            items, warnings = parse(sample_days().get(day.isoformat(), []), SAMPLE_BASE_URL, day)
            result.items.extend(items)
            result.warnings.extend(warnings)
        return result
