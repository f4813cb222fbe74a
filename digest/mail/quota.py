"""What a mail provider lets through: a rate per second, rolling hour and day quotas, and throttling.

Relays cap senders (Gmail a few hundred to 2,000 a day, SES 14 a second and 200 a day in its
sandbox) and answer a burst with ``421 4.7.0``. So a cycle asks :class:`SendQuota` before each
email: a digest that does not fit waits for the next cycle (it stays pending: the ledger and
``caught_up_to`` only move for digests handed over). The hour and day counts are rolling windows
kept per minute in ``data_dir/send_quota.json`` (0600, written atomically by the cycle, which holds
the store lock), so a restart does not reset them. The file is written ahead by a few emails
(:data:`RESERVE`): a crash can only over-count, never let the relay see more than its limit.

:class:`Throttle` is the answer to a server that says "too many": wait (exponential, with jitter)
and send more slowly from then on, on a budget of its own, so throttling never uses up the retry
budget meant for real failures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digest.paths import QUOTA_FILE
from digest.state.files import write_atomically

log = logging.getLogger(__name__)

RESERVE = 16  # emails counted in the file before they are sent: a crash over-counts by at most this
HOUR, DAY = 3600, 86400


@dataclass(frozen=True, slots=True)
class Limits:
    per_second: float | None = None
    per_hour: int | None = None
    per_day: int | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set (with none, nothing is counted or waited for)."""
        return bool(self.per_second) or self.counted

    @property
    def counted(self) -> bool:
        """Whether the rolling windows are kept at all (a per-second rate alone needs no file)."""
        return self.per_hour is not None or self.per_day is not None


def read_state(data_dir: Path) -> dict[str, Any]:
    """The quota file as written (``minutes`` and ``waiting``), or empty; for ``digest status`` too."""
    try:
        state = json.loads((data_dir / QUOTA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); counting sends from zero", data_dir / QUOTA_FILE, exc)
        return {}
    return state if isinstance(state, dict) else {}


class SendQuota:
    """Rolling hour/day counts and a per-second pace, shared by every connection of one cycle.

    ``clock`` gives seconds since the epoch (the cycle's clock, so tests can move days forward);
    ``wait`` sleeps and returns True when a stop interrupted it.
    """

    def __init__(
        self,
        data_dir: Path,
        limits: Limits,
        clock: Callable[[], float],
        wait: Callable[[float], bool],
    ) -> None:
        self.path = data_dir / QUOTA_FILE
        self.limits = limits
        self.clock = clock
        self.wait = wait
        self._lock = threading.Lock()
        state = read_state(data_dir) if limits.counted else {}
        raw = state.get("minutes") if isinstance(state.get("minutes"), dict) else {}
        self.minutes: dict[int, int] = {}
        for key, value in (raw or {}).items():
            with contextlib.suppress(TypeError, ValueError):
                self.minutes[int(key)] = int(value)
        self._written: dict[int, int] = dict(self.minutes)  # what the file says (>= what was sent)
        self._next_at = 0.0  # monotonic time the next email may go, for per_second
        self.waiting: dict[str, Any] | None = None

    def _used(self, now: float, window: int) -> int:
        # A minute counts while any part of it lies within the window: never under-counts.
        start = int(now - window) // 60
        return sum(n for minute, n in self.minutes.items() if minute >= start)

    def full(self) -> str | None:
        """Why no more email may go now (naming the setting), or None when one may."""
        now = self.clock()
        for limit, window, name, span in (
            (self.limits.per_hour, HOUR, "smtp.max_per_hour", "hour"),
            (self.limits.per_day, DAY, "smtp.max_per_day", "24 hours"),
        ):
            if limit is not None and self._used(now, window) >= limit:
                return f"{name} ({limit} in a rolling {span}) is reached"
        return None

    def take(self) -> str | None:
        """Count one email about to be sent, or say why it may not go (and count nothing).

        Waits first for the per-second pace. The file is written before the email goes whenever
        the count passes what the file holds, ahead by :data:`RESERVE`."""
        with self._lock:
            why = self.full()
            if why is not None:
                return why
            if self.limits.per_second:
                delay = self._next_at - time.monotonic()
                if delay > 0 and self.wait(delay):
                    return "a stop was requested"
                self._next_at = max(time.monotonic(), self._next_at) + 1.0 / self.limits.per_second
            if not self.limits.counted:
                return None
            minute = int(self.clock()) // 60
            self.minutes[minute] = self.minutes.get(minute, 0) + 1
            if self.minutes[minute] > self._written.get(minute, 0):
                self._save(reserve=RESERVE)
            return None

    def note_waiting(self, count: int, why: str, at: str) -> None:
        self.waiting = {"count": count, "why": why, "at": at} if count else None

    def _save(self, reserve: int = 0) -> None:
        """Write the counts (the current minute ``reserve`` ahead) and drop minutes older than a day."""
        now = self.clock()
        oldest = int(now - DAY) // 60
        self.minutes = {m: n for m, n in self.minutes.items() if m >= oldest}
        written = dict(self.minutes)
        if reserve:
            minute = int(now) // 60
            written[minute] = written.get(minute, 0) + reserve
        state = {"minutes": {str(m): n for m, n in sorted(written.items())}, "waiting": self.waiting}
        write_atomically(self.path, json.dumps(state, separators=(",", ":")).encode("ascii"))
        self._written = written

    def close(self) -> None:
        """Write the exact counts and what waits (at the end of the send loop)."""
        with self._lock:
            if self.limits.counted or self.waiting is not None or self.path.exists():
                self._save()


def is_throttling(code: int, text: str) -> bool:
    """A "slow down" reply: 421/450/451/452 that speaks of rate, too many, or status 4.7.0 (Postmark,
    SendGrid, SES and Gmail's wording), not a mailbox problem."""
    if code not in (421, 450, 451, 452):
        return False
    lowered = text.lower()
    return any(word in lowered for word in ("too many", "rate", "4.7.0", "throttl", "slow down", "limit exceeded"))


class Throttle:
    """Backoff with jitter for throttling replies, on its own budget, and a pace that stays slower.

    Each throttling reply doubles the gap kept between emails (up to :attr:`max_gap`) and waits
    ``initial * 2**n`` seconds, half of it random; every :attr:`recover_after` accepted emails in a
    row halve the gap again. Shared by every connection of a cycle: one server, one rate.
    """

    recover_after = 20
    max_gap = 5.0

    def __init__(
        self,
        budget: float,
        wait: Callable[[float], bool],
        initial: float = 1.0,
        max_delay: float = 60.0,
        unit: Callable[[], float] = random.random,
    ) -> None:
        self.budget = budget
        self.wait = wait
        self.initial = initial
        self.max_delay = max_delay
        self.unit = unit
        self.waited = 0.0
        self.gap = 0.0
        self.throttled = 0  # replies seen this cycle
        self._streak = 0
        self._lock = threading.Lock()
        self._next_at = 0.0

    def slow_down(self, retry: int) -> bool:
        """After a throttling reply: wait, and send more slowly from now on. False when the budget
        is spent (or a stop came): the caller leaves what is left for the next cycle."""
        with self._lock:
            self.throttled += 1
            self._streak = 0
            self.gap = min(self.max_gap, max(0.05, self.gap * 2))
            step = min(self.max_delay, self.initial * 2.0 ** (max(1, retry) - 1))
            delay = step / 2 + step / 2 * self.unit()
            if self.waited + delay > self.budget:
                return False
            self.waited += delay
        log.info("the SMTP server asks to slow down: waiting %.1fs, then one email every %.2fs", delay, self.gap)
        return not self.wait(delay)

    def pace(self) -> bool:
        """Keep the gap between emails; True when a stop interrupted the wait."""
        with self._lock:
            if not self.gap:
                return False
            delay = self._next_at - time.monotonic()
            self._next_at = max(time.monotonic(), self._next_at) + self.gap
        return delay > 0 and self.wait(delay)

    def accepted(self) -> None:
        with self._lock:
            self._streak += 1
            if self.gap and self._streak >= self.recover_after:
                self._streak = 0
                self.gap = self.gap / 2 if self.gap > 0.05 else 0.0
