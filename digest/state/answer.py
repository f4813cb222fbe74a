"""A bound on how long a request waits for the store, that does not wait for the work it gives up on.

``asyncio.wait_for`` cancels the work on timeout and then waits for it to end; work that cannot
end promptly keeps the request waiting anyway: a query psycopg cancels (it first asks the server
to cancel, up to 10 s, from a server that does not answer) or a call in a worker thread (a thread
cannot be cancelled). Here the request gets its :class:`StoreUnavailableError` at the bound, and the work
goes on in the background, kept referenced, its error logged: an unsubscribe under way still
commits when the server answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from digest.errors import StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

_left_running: set[asyncio.Future[Any]] = set()  # referenced until they end (asyncio keeps weak ones)


async def within(work: Awaitable[T], seconds: float, what: str, cancel: bool = False) -> T:
    """``work``'s result, or a :class:`StoreUnavailableError` "``what`` did not answer within ``seconds``".
    Past the bound ``work`` is cancelled if ``cancel`` (a read), else left to finish (a change)."""
    future = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({future}, timeout=seconds)
    except asyncio.CancelledError:  # the request itself is cancelled (a client gone, a shutdown)
        _leave_running(future, cancel)
        raise
    if future in done:
        return future.result()
    _leave_running(future, cancel)
    raise StoreUnavailableError(f"{what} did not answer within {seconds:g} s")


def _leave_running(future: asyncio.Future[Any], cancel: bool) -> None:
    if cancel:
        future.cancel()
    _left_running.add(future)
    future.add_done_callback(_ended)


def _ended(future: asyncio.Future[Any]) -> None:
    _left_running.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.warning("store work a request gave up waiting for ended in an error: %s", future.exception())
