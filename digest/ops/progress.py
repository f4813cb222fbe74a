"""Progress of a long send: a bar on a terminal, a log line every so often otherwise (logs, cron, CI)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("digest.ops.progress")

LOG_EVERY_PERCENT = 10
MIN_TOTAL = 20  # fewer digests than this finish before a bar is worth drawing


@contextmanager
def send_progress(stream: TextIO | None = None) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(position, total)`` callback for the send loop, with the right kind of output."""
    target = stream or sys.stderr
    if target.isatty():
        bar = Progress(
            TextColumn("sending digests"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=target),
            transient=True,
        )
        task = None
        with bar:

            def update(position: int, total: int) -> None:
                nonlocal task
                if total < MIN_TOTAL:
                    return
                if task is None:
                    task = bar.add_task("send", total=total)
                bar.update(task, completed=position)

            yield update
        return

    log.setLevel(logging.INFO)  # shown even when other info lines are not: a long run says it is alive
    last_logged = -1

    def log_line(position: int, total: int) -> None:
        nonlocal last_logged
        if total < MIN_TOTAL:
            return
        percent = position * 100 // total
        step = percent // LOG_EVERY_PERCENT
        if step != last_logged:
            last_logged = step
            log.info("sending digests: %d of %d (%d%%)", position, total, percent)

    yield log_line
