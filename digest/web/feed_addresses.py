"""Whose feed an address is: the feed tokens of every subscriber, found from the token alone.

A feed's token is a keyed hash that names nobody (:meth:`digest.signing.Signer.feed_token`):
feed addresses are pasted into other people's feed readers, and a signed payload is base64 that
anyone can read. So the feed keeps a table, token → address, built from the store's subscribers
in a worker thread (never on the event loop), once per store version
(:meth:`digest.web.feed.FeedBuilder.store_version`) and again when a token is not in it — at most
once every :data:`MISS_REBUILD_SECONDS`, so guessing tokens at any rate costs one rebuild per that
time, while a new subscriber's address is found within seconds. An address this process just
showed (the manage page) is noted at once.

Every token found is checked again against the subscriber as stored now, so a table that is out of
date can only miss. An address that was valid and is no more (the person left, or asked for a new
one) answers "gone" (410, which tells a feed reader to stop) for as long as this process knows it;
a token never issued, or one from before a restart, is simply unknown (404).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from digest.models import Subscriber
from digest.web.front import Front

TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")  # Signer.feed_token: 24 bytes, URL-safe base64
MISS_REBUILD_SECONDS = 5.0
MAX_REMEMBERED = 100_000  # gone and noted addresses kept, oldest forgotten first


@dataclass(frozen=True, slots=True)
class Table:
    """Every subscriber's feed token as of one store version, and when it was built (monotonic)."""

    version: object
    built_at: float
    holders: dict[str, str]  # token → address


def remember(kept: OrderedDict[str, str], token: str, value: str) -> None:
    kept[token] = value
    kept.move_to_end(token)
    while len(kept) > MAX_REMEMBERED:
        kept.popitem(last=False)


class FeedAddresses:
    """The feed tokens of the store ``front`` reads; ``version`` says when the store may have changed."""

    def __init__(self, front: Front, version: Callable[[], object]) -> None:
        self.front = front
        self.version = version
        self._table: Table | None = None
        self._building = asyncio.Lock()  # one rebuild at a time; the others wait for its table
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._noted: OrderedDict[str, str] = OrderedDict()

    def note(self, subscriber: Subscriber) -> None:
        """``subscriber``'s address was just shown: its first poll is answered without a rebuild."""
        remember(self._noted, self.front.signer.feed_token(subscriber), subscriber.email)

    async def holder(self, token: str) -> Subscriber | Literal["gone"] | None:
        """The subscriber whose feed ``token`` is now, "gone" for an address that was one and is
        no more, None for anything else."""
        email = await self._email_of(token)
        if email is None:
            return "gone" if token in self._gone else None
        subscriber = await self.front.subscriber(email)
        if subscriber is None or not hmac.compare_digest(self.front.signer.feed_token(subscriber), token):
            remember(self._gone, token, email)
            return "gone"
        return subscriber

    async def _email_of(self, token: str) -> str | None:
        if not TOKEN.fullmatch(token):
            return None
        table = self._table
        if table is None or table.version != self.version():
            table = await self._rebuild(table)
        email = table.holders.get(token) or self._noted.get(token)
        if email is None and token not in self._gone and time.monotonic() - table.built_at >= MISS_REBUILD_SECONDS:
            table = await self._rebuild(table)
            email = table.holders.get(token)
        return email

    async def _rebuild(self, seen: Table | None) -> Table:
        """A new table, unless another request built one since ``seen`` was read: then that one."""
        async with self._building:
            if self._table is not seen and self._table is not None:
                return self._table
            version = self.version()
            holders = await self.front.in_thread(self._holders)
            if seen is not None:
                for token, email in seen.holders.items():
                    if token not in holders:
                        remember(self._gone, token, email)
            self._table = Table(version, time.monotonic(), holders)
            return self._table

    def _holders(self) -> dict[str, str]:
        """In a worker thread: every subscriber's token (about a microsecond each)."""
        signer = self.front.signer
        return {signer.feed_token(person): person.email for person in self.front.read_store().subscribers()}
