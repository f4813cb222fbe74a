"""One paper, one item: items with the same id from several sources (or cycles) become one. Pure.

Hugging Face and arXiv both name a paper by its bare arXiv id, so the same paper from both is one
item, delivered once, carrying the best of each: upvotes, comments and the GitHub link from
Hugging Face, categories from arXiv. Which source's title, abstract and link win is a matter of
precedence — the order sources are configured in (Hugging Face first) — and a fresh copy beats a
stored one from the same source, so corrections and new counts come through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from digest.models import Item

T = TypeVar("T")


def merge_items(items: Iterable[Item], precedence: Sequence[str] = ()) -> list[Item]:
    """Items with equal ids merged into one, in the order each id first appears."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.id, []).append(item)
    return [combine(group, precedence) for group in groups.values()]


def with_stored(items: Iterable[Item], stored: Callable[[str], Item | None], precedence: Sequence[str]) -> list[Item]:
    """Each fresh item merged with what the store already holds for it, so nothing learnt is lost.

    arXiv lists a paper on one day only: when Hugging Face lists it again later, the categories
    learnt from arXiv must survive the update, and the other way round for upvotes.
    """
    merged = []
    for item in items:
        old = stored(item.id)
        merged.append(combine([item, old], precedence) if old is not None else item)
    return merged


def combine(copies: Sequence[Item], precedence: Sequence[str] = ()) -> Item:
    """One item out of copies of the same paper; earlier copies win ties within a source."""
    if not copies:
        raise ValueError("nothing to combine")
    rank = {name: position for position, name in enumerate(precedence)}
    ordered = sorted(copies, key=lambda c: rank.get(c.source, len(rank)))  # stable: input order within a rank
    first = ordered[0]
    return Item(
        id=first.id,
        source=first.source,
        title=_first([c.title for c in ordered], first.title),
        abstract=_first([c.abstract for c in ordered], first.abstract),
        url=_first([c.url for c in ordered], first.url),
        listed_on=min(c.listed_on for c in ordered),
        authors=_first([c.authors for c in ordered], first.authors),
        published_at=_first([c.published_at for c in ordered], None),
        upvotes=max(c.upvotes for c in ordered),
        comments=max(c.comments for c in ordered),
        thumbnail=_first([c.thumbnail for c in ordered], None),
        github_repo=_first([c.github_repo for c in ordered], None),
        ai_keywords=_first([c.ai_keywords for c in ordered], first.ai_keywords),
        organization=_first([c.organization for c in ordered], None),
        withdrawn=any(c.withdrawn for c in ordered),
        categories=tuple(dict.fromkeys(category for c in ordered for category in c.categories)),
    )


def _first(values: Iterable[T], default: T) -> T:
    """The first value that is not empty."""
    return next((value for value in values if value), default)
