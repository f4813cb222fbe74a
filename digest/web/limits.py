"""How often the forms may be used, and the per-address limit kept across restarts.

The sign-up form sends mail to whatever address it is given: at most so many mails per address
(a stranger's inbox) and sign-ups per client, and reading rules costs CPU, so previews are limited
per client too. The per-address limit is written to :data:`~digest.paths.LIMITS_FILE`
(addresses only as keyed hashes): otherwise restarting the service would let the same stranger be
mailed twice within the window.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from digest.paths import LIMITS_FILE
from digest.state.files import write_atomically
from digest.web.ratelimit import RateLimit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebLimits:
    """How often the form may send mail: per address (a stranger's inbox) and per client IP."""

    mails_per_address: int = 1
    address_window_seconds: float = 3600
    signups_per_ip: int = 10
    ip_window_seconds: float = 3600
    previews_per_ip: int = 120
    preview_window_seconds: float = 60
    votes_per_ip: int = 120  # "more like this" / "not for me" pages and presses (digest.web.vote)
    vote_window_seconds: float = 60
    feeds_per_ip: int = 600  # feed polls (digest.web.feed): a feed reader's server polls many people's feeds
    feed_window_seconds: float = 3600
    manage_per_ip: int = 120  # GET and POST /manage (digest.web.manage); /unsubscribe is never limited
    manage_window_seconds: float = 60


class FormLimits:
    """The three limits of :class:`WebLimits`, the per-address one read at start and saved after each mail."""

    def __init__(self, limits: WebLimits, data_dir: Path, now: float) -> None:
        self.config = limits
        self.address_mails = RateLimit(limits.mails_per_address, limits.address_window_seconds)
        self.ip_signups = RateLimit(limits.signups_per_ip, limits.ip_window_seconds)
        self.ip_previews = RateLimit(limits.previews_per_ip, limits.preview_window_seconds)
        self.ip_votes = RateLimit(limits.votes_per_ip, limits.vote_window_seconds)
        self.ip_feeds = RateLimit(limits.feeds_per_ip, limits.feed_window_seconds)
        self.ip_manage = RateLimit(limits.manage_per_ip, limits.manage_window_seconds)
        self.path = data_dir / LIMITS_FILE
        self._lock = threading.Lock()
        self._load(now)

    def _load(self, now: float) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(data, dict):
            self.address_mails.restore(data.get("address_mails"), now)

    def save(self, now: float) -> None:
        """Keep the per-address limit across restarts (call it in a worker thread: it writes a file).

        One writer at a time: sign-ups send in worker threads, and the temporary file is per process.
        """
        with self._lock:
            payload = {"address_mails": self.address_mails.snapshot(now)}
            try:
                write_atomically(self.path, json.dumps(payload).encode("utf-8"))
            except OSError as exc:
                log.warning("could not save the sign-up rate limits to %s: %s", self.path, exc)
