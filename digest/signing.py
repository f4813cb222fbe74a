"""Signed tokens for every link that changes a subscription or shows someone's digest.

Each token names its purpose (salt) and subscriber, so a "view digest" token cannot unsubscribe
and a token for one address cannot act on another. Confirm tokens expire; unsubscribe tokens do not
(an old email's one-click unsubscribe must keep working). An "inbox" token only lets the page shown
after a sign-up repeat the address without putting it in the URL (tokens are redacted from logs);
it acts on nothing and lasts an hour.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from digest.errors import TokenError

Purpose = Literal["confirm", "manage", "unsubscribe", "digest", "inbox"]

MAX_AGE_SECONDS: dict[str, int | None] = {
    "confirm": 7 * 24 * 3600,
    "manage": None,
    "unsubscribe": None,
    "digest": None,
    "inbox": 3600,
}


class Signer:
    def __init__(self, secret_key: str) -> None:
        # One serializer per purpose, built once: a cycle signs three links per email.
        self._serializers = {
            purpose: URLSafeTimedSerializer(secret_key, salt=f"digest.{purpose}") for purpose in get_args(Purpose)
        }

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        return self._serializers[purpose]

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
