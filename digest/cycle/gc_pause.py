"""Pause Python's cyclic garbage collector over a stage that allocates much and frees nothing.

Matching a day for every subscriber creates a million small dicts and tuples that all live until
the cycle ends. Each of them counts towards the collector's next automatic pass, and the passes
re-walk every container already alive (the loaded store, the items, the index), so they cost
more the bigger the store (``bench/matching.md``).
None of those objects form reference cycles, so pausing frees nothing later than it would have
been freed; the collector runs again, as before, when the stage ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cyclic collection inside the block; the previous setting is restored after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
