"""The order of papers in a digest, a preview and ``digest try``: most relevant first."""

from __future__ import annotations

from digest.models import DigestEntry

RankKey = tuple[int, bool, int, str]


def rank_key(entry: DigestEntry) -> RankKey:
    """Sorts most relevant first: more distinct rules matched, then a title match, then upvotes,
    then title."""
    matches, item = entry.matches, entry.item
    return (-len({m.rule for m in matches}), not any(m.in_title for m in matches), -item.upvotes, item.title.casefold())


def rank_entries(entries: list[DigestEntry]) -> list[DigestEntry]:
    """Most relevant first (see :func:`rank_key`); ties keep their order."""
    return sorted(entries, key=rank_key)
