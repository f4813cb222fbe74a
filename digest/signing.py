"""Signed tokens for every link that changes a subscription or shows someone's digest.

Each token names its purpose (salt) and subscriber, so a "view digest" token cannot unsubscribe
and a token for one address cannot act on another. Confirm tokens expire; unsubscribe tokens do not
(an old email's one-click unsubscribe must keep working). An "inbox" token only lets the page shown
after a sign-up repeat the address without putting it in the URL (tokens are redacted from logs);
it acts on nothing and lasts an hour. A "vote" token names one paper and one vote (+1/-1): its
page records that vote when the person presses the button, and nothing else. A "feed" token opens
a subscriber's Atom feed (read only) and never expires; it carries no time stamp, so it is the same
each time it is shown: a feed reader knows a feed by its URL.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from itsdangerous import BadSignature, Serializer, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from digest.errors import TokenError

Purpose = Literal["confirm", "manage", "unsubscribe", "digest", "inbox", "vote", "feed"]

MAX_AGE_SECONDS: dict[str, int | None] = {
    "confirm": 7 * 24 * 3600,
    "manage": None,
    "unsubscribe": None,
    "digest": None,
    "inbox": 3600,
    "vote": None,  # an old digest's "not for me" keeps working, like its unsubscribe link
    "feed": None,  # feeds are polled for years
}
UNTIMED = frozenset({"feed"})  # signed without a time stamp: the same link every time


class Signer:
    def __init__(self, secret_key: str) -> None:
        # One serializer per purpose, built once: a cycle signs three links per email.
        self._serializers: dict[str, Serializer[str]] = {
            purpose: (URLSafeSerializer if purpose in UNTIMED else URLSafeTimedSerializer)(
                secret_key, salt=f"digest.{purpose}"
            )
            for purpose in get_args(Purpose)
        }

    def _serializer(self, purpose: Purpose) -> Serializer[str]:
        return self._serializers[purpose]

    def sign(self, purpose: Purpose, email: str, **extra: Any) -> str:
        return str(self._serializer(purpose).dumps({"e": email.lower(), **extra}))

    def verify(self, purpose: Purpose, token: str) -> dict[str, Any]:
        try:
            serializer = self._serializer(purpose)
            if isinstance(serializer, URLSafeTimedSerializer):
                data = serializer.loads(token, max_age=MAX_AGE_SECONDS[purpose])
            else:
                data = serializer.loads(token)
        except SignatureExpired as exc:
            raise TokenError("this link has expired", expired=True) from exc
        except BadSignature as exc:
            raise TokenError("this link is not valid") from exc
        if not isinstance(data, dict) or not isinstance(data.get("e"), str):
            raise TokenError("this link is not valid")
        return data
