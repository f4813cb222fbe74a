"""Structured logs: one line per event, as ``key=value`` pairs (logfmt) or JSON, by ``log_format``.

A service that runs for months is read by grep and by log shippers, not by people watching a
terminal, so every event is one line with the same keys (``ts level logger msg``) plus the event's
own fields, passed as ``extra={"fields": {...}}``. Tracebacks are folded into the line too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["keyvalue", "json"]


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        base.update({k: v for k, v in extra.items() if k not in base})
    if record.exc_info:
        base["exc"] = logging.Formatter().formatException(record.exc_info)
    return base


def logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in event_fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(event_fields(record), ensure_ascii=False, default=str)


def configure_logging(log_format: LogFormat = "keyvalue", level: int = logging.WARNING) -> None:
    """Send digest's events to standard error, one line each, replacing any earlier set-up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request and APScheduler every job run at INFO: digest logs what matters
    # about those itself, so theirs are kept for debugging only.
    for noisy in ("httpx", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
