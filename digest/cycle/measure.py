"""Where a cycle's time and memory go: seconds per stage and the process's peak memory after each.

Kept in the cycle's record for ``digest status`` and the benchmark (``bench/``), which reads the
render process's memory beside the cycle's own.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from digest.models import CycleReport


class StageClock:
    """Adds up the seconds spent in each stage of a cycle and notes peak memory after each."""

    def __init__(self, report: CycleReport) -> None:
        self.report = report

    @contextmanager
    def stage(self, name: str, note_memory: bool = True) -> Iterator[None]:
        """Time a stage. A stage entered once per email passes ``note_memory=False`` and calls
        :meth:`note_memory` after the loop: the peak is a high-water mark, so one reading after
        the loop tells the same, without reading ``/proc`` twice per email."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.report.stages[name] = self.report.stages.get(name, 0.0) + time.perf_counter() - started
            if note_memory:
                self.note_memory(name)

    def note_memory(self, name: str) -> None:
        self.report.peak_mb[name] = peak_memory_mb()

    def add(self, name: str, seconds: float) -> None:
        """Time spent elsewhere (in the render process) on this cycle's behalf."""
        self.report.stages[name] = self.report.stages.get(name, 0.0) + seconds


def peak_memory_mb() -> float:
    """The process's peak resident memory so far.

    Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``exec`` and so can report the parent's size
    (a benchmark or a test runner that started this process). macOS reports bytes, Linux KiB.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
