"""Sliding-window rate limits, so the sign-up form cannot be used to bomb a stranger's inbox.

A :class:`RateLimit` keeps, per key, the times of the hits it allowed within the window; a hit is
allowed while fewer than ``limit`` are on record. Pure apart from a lock: the caller passes the
time, so tests need no clock. The per-address limit survives a restart (``snapshot``/``restore``,
written by the web layer) — otherwise restarting the service would let the same stranger be
mailed twice within the window.
"""

from __future__ import annotations

import threading
from collections import deque


class RateLimit:
    """At most ``limit`` hits per key within any ``window_seconds``."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("a rate limit needs limit >= 1 and a positive window")
        self.limit = limit
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def allow(self, key: str, now: float) -> bool:
        """Record a hit for ``key`` and say yes, or say no (and record nothing) when over the limit."""
        with self._lock:
            self._calls += 1
            if self._calls % 1024 == 0:
                self._sweep(now)
            hits = self._recent(key, now)
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            self._hits[key] = hits
            return True

    def forget_last(self, key: str) -> None:
        """Take back the latest hit (the mail it allowed was never sent, so it must not count)."""
        with self._lock:
            hits = self._hits.get(key)
            if hits:
                hits.pop()

    def _sweep(self, now: float) -> None:
        """Drop keys whose hits have all expired, so memory stays bounded by recent traffic."""
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[key]

    def snapshot(self, now: float) -> dict[str, list[float]]:
        with self._lock:
            self._sweep(now)
            return {key: list(self._recent(key, now)) for key in self._hits}

    def restore(self, data: object, now: float) -> None:
        """Load a :meth:`snapshot`; anything malformed is ignored (a limit must never stop start-up)."""
        if not isinstance(data, dict):
            return
        with self._lock:
            for key, times in data.items():
                if not isinstance(key, str) or not isinstance(times, list):
                    continue
                recent = sorted(float(t) for t in times if isinstance(t, int | float) and now - self.window < t <= now)
                if recent:
                    self._hits[key] = deque(recent[-self.limit :])
