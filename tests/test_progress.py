"""Progress output: plain log lines when not on a terminal, a bar on one."""

from __future__ import annotations

import io
import logging

import pytest

from digest.ops.progress import send_progress


def test_plain_log_lines_every_ten_percent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="digest.ops.progress")
    with send_progress(io.StringIO()) as progress:
        for position in range(1, 101):
            progress(position, 100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "sending digests: 1 of 100 (1%)"
    assert lines[-1] == "sending digests: 100 of 100 (100%)"
    assert len(lines) == 11


def test_a_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with send_progress(screen) as progress:
        for position in range(1, 51):
            progress(position, 50)
    assert "sending digests" in screen.getvalue()
