"""Uvicorn's access log without the tokens that links carry.

Access logs print request paths; manage, unsubscribe, confirm and digest links carry signed tokens
that act for their address, and a feed's address is its token, so a log must never hold one.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus


class TokenRedactingFilter(logging.Filter):
    """Redacts tokens from every record of the logger it is added to.

    A parameter is judged by its decoded name (``%74oken=`` is read as ``token=`` by the app too),
    and its whole value goes, whatever it holds.
    """

    PARAMETER = re.compile(r"([?&;])([^=&;\s\"]*)=([^&;\s\"]*)")
    SECRET_NAMES = frozenset({"token", "t"})
    # What a signed link token looks like (digest.signing: payload.timestamp.signature, URL-safe
    # base64), wherever it stands: ``?token%3D…``, ``?…`` alone or in the path still carry one.
    TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")
    # A feed's token is its path (digest.web.feed): a keyed hash, 32 URL-safe characters.
    FEED_PATH = re.compile(r"/feed/[^/\s\"?#]+", re.IGNORECASE)

    @classmethod
    def redact(cls, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = unquote_plus(match.group(2)).strip().lower()
            return f"{match.group(1)}{match.group(2)}=[redacted]" if name in cls.SECRET_NAMES else match.group(0)

        text = cls.TOKEN_SHAPE.sub("[redacted]", cls.PARAMETER.sub(one, text))
        text = cls.FEED_PATH.sub("/feed/[redacted]", text)
        if cls.TOKEN_SHAPE.search(unquote_plus(text)):  # percent-encoded inside: drop every query
            text = re.sub(r"\?\S*", "?[redacted]", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True


def redact_tokens_in_access_log() -> None:
    """Add the filter to ``uvicorn.access`` once, however many apps the process creates."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, TokenRedactingFilter) for f in access.filters):
        access.addFilter(TokenRedactingFilter())
