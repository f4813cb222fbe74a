"""SIGTERM and SIGINT as a request to stop, for ``digest run`` and ``digest serve`` alike.

A signal only sets an event: the cycle checks it before each email, so the email being handed over
is finished and recorded, and the rest stays pending for the next cycle. Killing the process
mid-send instead would leave a sent email unrecorded.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_signals(announce: Callable[[str], None]) -> Iterator[threading.Event]:
    """The event SIGTERM/SIGINT set while inside; ``announce`` gets the first signal's name (the
    operator sees the stop was heard). The previous handlers come back on the way out."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            announce(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
