"""Source kinds and the sources settings enable: kind → factory, in one table.

Adding a kind is one module with a pure ``parse`` and a thin fetch, plus one line here. The order
of :func:`configured_sources` is the precedence :func:`digest.sources.merge.merge_items` uses when two
sources bring the same paper (Hugging Face, then arXiv, then feeds in the order they are listed).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from digest.settings import SourcesSettings
from digest.sources import Source
from digest.sources.arxiv import ArxivSource
from digest.sources.conditional import StateBook
from digest.sources.feed import FeedSource
from digest.sources.hf_papers import HfPapersSource

Factory = Callable[[Any, StateBook | None, Callable[[], datetime]], Source]

# How the email names a source, on each paper and in the coverage receipt; a feed by its own name.
SOURCE_LABELS = {"hf_papers": "Hugging Face", "arxiv": "arXiv"}

KINDS: dict[str, Factory] = {
    "hf_papers": lambda settings, book, now: HfPapersSource(settings),
    "arxiv": lambda settings, book, now: ArxivSource(settings, book, now),
    "feed": lambda settings, book, now: FeedSource(settings, book, now),
}


def source_label(name: str) -> str:
    """How the email names a source: built-in kinds by their site, feeds by their own name."""
    return SOURCE_LABELS.get(name, name)


def enabled(settings: SourcesSettings) -> list[tuple[str, Any]]:
    """``(kind, section)`` for every enabled source, in precedence order."""
    chosen: list[tuple[str, Any]] = []
    if settings.hf_papers.enabled:
        chosen.append(("hf_papers", settings.hf_papers))
    if settings.arxiv.enabled:
        chosen.append(("arxiv", settings.arxiv))
    chosen.extend(("feed", feed) for feed in settings.feeds if feed.enabled)
    return chosen


def configured_sources(settings: SourcesSettings, book: StateBook | None, now: Callable[[], datetime]) -> list[Source]:
    return [KINDS[kind](section, book, now) for kind, section in enabled(settings)]
