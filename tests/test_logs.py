"""Structured log lines: one line per event, key=value or JSON, with the event's own fields."""

from __future__ import annotations

import json
import logging
import sys

from digest.ops.logs import JsonFormatter, KeyValueFormatter


def record(message: str, *args: object, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("digest.cycle.steps", logging.WARNING, __file__, 1, message, args, None)
    if fields:
        made.fields = fields
    return made


def test_key_value_lines_quote_what_needs_it() -> None:
    line = KeyValueFormatter().format(record("sent %s", "digest 1", to="a@example.org", papers=3, note='say "hi"\nbye'))
    assert "\n" not in line
    assert line.startswith("ts=") and 'level=warning logger=digest.cycle.steps msg="sent digest 1"' in line
    assert 'to=a@example.org papers=3 note="say \\"hi\\"\\nbye"' in line


def test_json_lines_carry_fields_and_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record("cycle crashed", trigger="scheduled")
        failing.exc_info = sys.exc_info()
    line = JsonFormatter().format(failing)
    assert "\n" not in line
    event = json.loads(line)
    assert event["msg"] == "cycle crashed" and event["trigger"] == "scheduled" and event["level"] == "warning"
    assert "ValueError: boom" in event["exc"]
