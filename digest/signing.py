"""Signed tokens for every link that changes a subscription or shows someone's digest.

Each token names its purpose (salt) and subscriber, so a "view digest" token cannot unsubscribe
and a token for one address cannot act on another. Confirm tokens expire; unsubscribe tokens do not
(an old email's one-click unsubscribe must keep working). An "inbox" token only lets the page shown
after a sign-up repeat the address without putting it in the URL (tokens are redacted from logs);
it acts on nothing and lasts an hour. A "vote" token names the address only (one per email; the
paper and the +1/-1 go beside it in the link), an older email's also one paper and one vote: its
page records a vote when the person presses the button, and nothing else (:mod:`digest.web.vote`).

A feed's address is different (:meth:`Signer.feed_token`): feed URLs are pasted into other
people's feed readers, and a signed token's payload is base64 that anyone can read, so it is a
keyed hash that names nobody, the same each time it is shown (a feed reader knows a feed by its
URL), found again by the feed's own table of addresses (:mod:`digest.web.feed_addresses`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Literal, get_args

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from digest.errors import TokenError
from digest.models import Subscriber

Purpose = Literal["confirm", "manage", "unsubscribe", "digest", "inbox", "vote"]
FEED_TOKEN_BYTES = 24  # 192 bits of the HMAC: 32 URL-safe characters, past guessing

MAX_AGE_SECONDS: dict[str, int | None] = {
    "confirm": 7 * 24 * 3600,
    "manage": None,
    "unsubscribe": None,
    "digest": None,
    "inbox": 3600,
    "vote": None,  # an old digest's "not for me" keeps working, like its unsubscribe link
}


class Signer:
    def __init__(self, secret_key: str) -> None:
        # One serializer per purpose, built once: a cycle signs three links per email.
        self._serializers: dict[str, URLSafeTimedSerializer] = {
            purpose: URLSafeTimedSerializer(secret_key, salt=f"digest.{purpose}") for purpose in get_args(Purpose)
        }
        self._feed_key = hashlib.sha256(b"digest.feed-address\0" + secret_key.encode()).digest()

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        return self._serializers[purpose]

    def feed_token(self, subscriber: Subscriber) -> str:
        """The token of ``subscriber``'s feed address: HMAC-SHA256 under a key of its own made from
        the secret, over the address, the feed key (a new one retires the old address) and when they
        subscribed (someone who leaves and comes back gets a new address). Opaque and stable."""
        when = subscriber.subscribed_at.isoformat() if subscriber.subscribed_at else ""
        message = "\0".join((subscriber.email.lower(), subscriber.feed_key or "", when)).encode()
        digest = hmac.digest(self._feed_key, message, "sha256")[:FEED_TOKEN_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii")

    def sign(self, purpose: Purpose, email: str, **extra: Any) -> str:
        return str(self._serializer(purpose).dumps({"e": email.lower(), **extra}))

    def verify(self, purpose: Purpose, token: str) -> dict[str, Any]:
        try:
            data = self._serializer(purpose).loads(token, max_age=MAX_AGE_SECONDS[purpose])
        except SignatureExpired as exc:
            raise TokenError("this link has expired", expired=True) from exc
        except BadSignature as exc:
            raise TokenError("this link is not valid") from exc
        if not isinstance(data, dict) or not isinstance(data.get("e"), str):
            raise TokenError("this link is not valid")
        return data
