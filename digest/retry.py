"""When to try again: exponential backoff with jitter, ``Retry-After``, and a budget for a whole cycle.

Fetching and sending both meet transient failures (a 503, a 429, a 451, a dropped connection). A
retry right away usually fails again and piles onto a struggling server; waiting forever leaves
everyone without a digest. So each attempt waits twice as long as the one before, with random
jitter so that many clients do not retry in step, never more than ``max_delay``; a server's own
``Retry-After`` wins when it asks for longer. All waits of one kind in one cycle draw on one
budget, so a source that is down for the whole cycle costs a bounded time, after which its days
are simply remembered and fetched again by the next cycle. A stop request (SIGTERM) ends any wait
at once.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many tries, how long between them, and how long in total (seconds of waiting)."""

    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    budget: float = 300.0

    def backoff(self, retry: int, unit: float) -> float:
        """The wait before retry number ``retry`` (1-based); ``unit`` in [0, 1) picks the jitter.

        "Equal jitter": half the exponential step is kept, the other half is random, so waits
        still grow but two clients that failed together do not come back together.
        """
        step: float = min(self.max_delay, self.initial_delay * 2.0 ** (retry - 1))
        return step / 2 + step / 2 * unit


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: a number of seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Retrier:
    """One budget of waiting, shared by every retry of one kind (fetch or send) in one cycle."""

    def __init__(
        self,
        policy: RetryPolicy,
        stop: threading.Event | None = None,
        wait: Callable[[float], bool] | None = None,
        unit: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.stop = stop or threading.Event()
        self._wait = wait or self.stop.wait
        self._unit = unit
        self.waited = 0.0

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` spent in an attempt that failed (say, waiting for a server that then
        timed out) as waiting: otherwise a slow failure costs the budget nothing, and a cycle of
        them costs one timeout per attempt."""
        self.waited += max(0.0, seconds)

    def pause(self, retry: int, what: str, hint: float | None = None) -> bool:
        """Wait before retry number ``retry`` of ``what``; False when it should not be retried.

        Not retried: the attempts are used up, the wait (``hint`` from ``Retry-After`` when it is
        longer than the backoff) would overrun the budget, or a stop was requested.
        """
        if self.stopped or retry >= self.policy.attempts:
            return False
        delay = self.policy.backoff(retry, self._unit())
        if hint is not None and hint > delay:
            delay = hint
        if self.waited + delay > self.policy.budget:
            log.warning(
                "retry budget spent: %s is not retried (asked to wait %.1fs, %.1fs of %.0fs left)",
                what,
                delay,
                max(0.0, self.policy.budget - self.waited),
                self.policy.budget,
            )
            return False
        log.info("retrying %s in %.1fs (retry %d of %d)", what, delay, retry, self.policy.attempts - 1)
        self.waited += delay
        interrupted = self._wait(delay)
        return not interrupted and not self.stopped
