"""Rendered papers kept per process, by (item, matches): subscribers with the same rule get the same
highlights, so a cycle renders each paper once per set of matches, not once per email."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from digest.mail.papers import render_papers
from digest.mail.views import CACHED_PAPERS, PaperView
from digest.models import DigestEntry


class PaperCache:
    """Rendered papers by (item, matches): subscribers with the same rule get the same highlights.

    A cycle sends the same paper, matched by the same popular rule, to many people; each is
    rendered once per process. Least recently used out first past ``size``; thread-safe. One
    cache per layout (:func:`paper_cache`).
    """

    def __init__(self, size: int, layout: str = "full") -> None:
        self.size = size
        self.layout = layout
        self._papers: OrderedDict[DigestEntry, PaperView] = OrderedDict()
        self._lock = threading.Lock()

    def views(self, entries: Sequence[DigestEntry]) -> list[PaperView]:
        """The views of ``entries`` (distinct, as a digest's are), rendering only those not cached.

        Each entry is hashed once on a hit and twice on a miss: a dataclass hash is computed in
        Python over every field of the item and every highlight, each time.
        """
        with self._lock:
            found = [self._papers.get(e) for e in entries]
            for entry, paper in zip(entries, found, strict=True):
                if paper is not None:
                    self._papers.move_to_end(entry)
        missing = [e for e, paper in zip(entries, found, strict=True) if paper is None]
        if not missing:
            return [paper for paper in found if paper is not None]
        fresh = iter(render_papers(missing, self.layout))
        views = [paper if paper is not None else next(fresh) for paper in found]
        with self._lock:
            for entry, paper, view in zip(entries, found, views, strict=True):
                if paper is None:
                    self._papers[entry] = view
            while len(self._papers) > self.size:
                self._papers.popitem(last=False)
        return views

    def clear(self) -> None:
        with self._lock:
            self._papers.clear()

    def __len__(self) -> int:
        return len(self._papers)


PAPERS = PaperCache(CACHED_PAPERS)
COMPACT_PAPERS = PaperCache(CACHED_PAPERS, "compact")


def paper_cache(layout: str) -> PaperCache:
    """The cache of a layout's paper blocks; an unknown layout (a hand-edited store) reads as full."""
    return COMPACT_PAPERS if layout == "compact" else PAPERS
