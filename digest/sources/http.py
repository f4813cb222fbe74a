"""An httpx transport that retries what is worth retrying, so every source gets retries for free.

Sources only call ``client.get``; the cycle's client is built on :class:`RetryingTransport`, which
retries network errors, 429 and 5xx answers to GET requests with backoff and jitter, honours
``Retry-After``, and draws every wait from the cycle's one :class:`~digest.retry.Retrier` budget.
When it gives up it hands back the last answer (or raises the last network error), and the source
records the day as failed, to be fetched again next cycle.
"""

from __future__ import annotations

import httpx

from digest.retry import Retrier, retry_after_seconds

# A request may ask that its retries wait at least this many seconds (arXiv: its 3 s spacing).
MIN_RETRY_DELAY = "digest.min_retry_delay"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def worth_retrying(status: int) -> bool:
    return status in RETRY_STATUSES or 500 <= status < 600


class StoppedError(httpx.TransportError):
    """A request not made because a stop (SIGTERM) was requested."""


class RetryingTransport(httpx.BaseTransport):
    """Wraps a transport; retries idempotent requests on network errors, 429 and 5xx."""

    def __init__(self, retrier: Retrier, inner: httpx.BaseTransport | None = None) -> None:
        self.retrier = retrier
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.retrier.stopped:
            # Stopping: no new request (one could hang for the whole timeout). The source records
            # the day as failed, and the next cycle fetches it.
            raise StoppedError("not fetched: digest is stopping", request=request)
        if request.method not in SAFE_METHODS:
            return self.inner.handle_request(request)
        retry = 0
        floor = float(request.extensions.get(MIN_RETRY_DELAY, 0.0))
        while True:
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as exc:
                retry += 1
                if not self.retrier.pause(retry, f"GET {request.url} ({type(exc).__name__})", floor or None):
                    raise
                continue
            if not worth_retrying(response.status_code):
                return response
            retry += 1
            hint = max(retry_after_seconds(response.headers.get("Retry-After")) or 0.0, floor) or None
            if not self.retrier.pause(retry, f"GET {request.url} (HTTP {response.status_code})", hint):
                return response
            response.read()
            response.close()

    def close(self) -> None:
        self.inner.close()
