"""SIGTERM and SIGINT as a request to stop, for ``digest run`` and ``digest serve`` alike.

A signal only sets an event: the cycle checks it before each email, so the email being handed over
is finished and recorded, and the rest stays pending for the next cycle. Killing the process
mid-send instead would leave a sent email unrecorded.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOPPING = "finishing the email being sent, then stopping"


def announce_stop(signal_name: str, log: logging.Logger | None = None) -> None:
    """Tell the operator the stop was heard: in ``log`` (the service's), else on stderr (a command)."""
    if log is None:
        print(f"digest: {signal_name} received: {STOPPING}", file=sys.stderr)
    else:
        log.info("received %s: %s", signal_name, STOPPING)


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
