"""``/feed/<token>.xml``: a subscriber's own Atom feed of the papers their rules matched.

The papers of the last :data:`FEED_DAYS` days that are stored, matched by the same matcher as the
cycle (:class:`~digest.matching.rules.Matcher`) and explained as the email explains them
(:mod:`digest.web.atom`), newest day first and, within a day, in the email's order; at most
:data:`MAX_ENTRIES`. Feed readers poll for years, so:

- the token is a keyed hash that names nobody (:meth:`digest.signing.Signer.feed_token`), the same
  each time it is shown until the person asks for a new one (the manage page), and found through
  :mod:`digest.web.feed_addresses`; a token that is not ours gets the site's plain 404, one whose
  subscriber left or took a new address gets 410 Gone (which tells a feed reader to stop), with
  nothing about them;
- a feed is built in one worker thread of its own (never on the event loop, and never more than
  one at a time holding the GIL against the pages), at most once per (day, store file, rules)
  and person: a poll in between is a dictionary look-up, and a conditional one
  (``If-None-Match``/``If-Modified-Since``) is answered ``304 Not Modified``;
- the worker's queue is fair: one build per person waits or runs at a time (a poll with newer
  rules updates the one waiting, or waits for the one running and then builds once), so one
  person changing rules and polling cannot keep another's feed waiting;
- polls are limited per client IP (:class:`~digest.web.limits.WebLimits`), and too many different
  feeds waiting to be built are told to come back (503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from digest.errors import DigestError, RuleError
from digest.mail.paper_cache import paper_cache
from digest.matching.ranking import rank_entries
from digest.matching.rules import ItemIndex, Matcher, parse_rules
from digest.models import DigestEntry, Item, Subscriber
from digest.paths import STORE_FILE
from digest.signing import Signer
from digest.state.backend import is_postgres
from digest.state.keeper import file_identity
from digest.web.atom import MEDIA_TYPE, FeedHead, atom_feed, day_start
from digest.web.feed_addresses import FeedAddresses
from digest.web.front import Front

log = logging.getLogger(__name__)

FEED_DAYS = 30  # the stored papers of the last 30 days (the store keeps retention_days, 30 by default)
MAX_ENTRIES = 100
MAX_WAITING = 64  # people whose feed is being built or waits for the worker; more are told to come back
POSTGRES_REFRESH_SECONDS = 600  # a PostgreSQL store's feeds are built again at most this often
CACHE_BYTES = 32 * 1024 * 1024  # built feeds kept, least recently polled out first
FEED_NAMESPACE = uuid.UUID("0b6f9d52-7c1e-4a8b-b3d4-5e9a2f7c6d18")
CACHE_CONTROL = "private, max-age=600"

Key = tuple[date, object, tuple[str, ...], str]  # the day, the store file's identity, the rules, the token


def feed_url(signer: Signer, base: str, subscriber: Subscriber) -> str:
    """The address of ``subscriber``'s feed under ``base`` (``public_url``): the same every time,
    until they ask for a new one."""
    return f"{base}/feed/{signer.feed_token(subscriber)}.xml"


@dataclass(frozen=True, slots=True)
class Built:
    """A feed as served: its bytes, validators, and the inputs it was built from."""

    key: Key
    body: bytes
    etag: str
    last_modified: datetime  # when this body was first built (kept while the bytes stay the same)


def not_modified(headers: Headers, built: Built) -> bool:
    """Whether a conditional GET can be answered 304: ``If-None-Match`` first (RFC 9110 13.2.2), and
    only without it ``If-Modified-Since``."""
    tags = headers.get("if-none-match")
    if tags is not None:
        listed = {tag.strip().removeprefix("W/") for tag in tags.split(",")}
        return "*" in listed or built.etag in listed
    since = headers.get("if-modified-since")
    if not since:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return built.last_modified <= when


@dataclass(slots=True)
class _Job:
    """A person's one build, waiting or running: it builds the newest ``key`` asked for until it starts."""

    subscriber: Subscriber
    key: Key
    future: Future[Built] | None = None
    started: bool = False


class FeedBuilder:
    """Builds feeds in one worker thread and keeps them (see the module's docstring)."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-feed")
        self._lock = threading.RLock()  # a done future's callback runs at once, under it
        self._built: OrderedDict[str, Built] = OrderedDict()  # by address
        self._bytes = 0
        self._pending: dict[str, _Job] = {}  # by address: one build per person waits or runs
        # The window's papers and a matcher over them, shared by every feed (the worker's alone).
        self._recent_key: tuple[date, object] | None = None
        self._recent: tuple[list[Item], Matcher] = ([], Matcher(ItemIndex([])))

    def key_for(self, subscriber: Subscriber) -> Key:
        return (self.front.today(), self.store_version(), subscriber.rules, self.front.signer.feed_token(subscriber))

    def store_version(self) -> object:
        """What changes when the stored papers may have: the TinyDB file's identity; for PostgreSQL,
        which has no file to watch, the current ten minutes (papers arrive a few times a day)."""
        if is_postgres(self.front.settings.store.url):
            return int(self.front.now_seconds() // POSTGRES_REFRESH_SECONDS)
        return file_identity(self.front.settings.data_dir / STORE_FILE)

    async def get(self, subscriber: Subscriber) -> Built | None:
        """``subscriber``'s feed, built now only if what it is built from changed; None when too
        many people's feeds wait for the worker. A build of theirs that is running already (for
        other rules) is waited for first; one still waiting builds this poll's ``key`` instead."""
        email, key = subscriber.email, self.key_for(subscriber)
        built: Built | None = None
        for _ in range(3):  # the build running, then ours (a third: their rules changed again meanwhile)
            with self._lock:
                found = self._built.get(email)
                if found is not None and found.key == key:
                    self._built.move_to_end(email)
                    return found
                job = self._job(subscriber, key)
                if job is None:
                    return None
                waiting = not job.started
                if waiting:
                    job.subscriber, job.key = subscriber, key
                assert job.future is not None
            built = await self.front.bounded(asyncio.shield(asyncio.wrap_future(job.future)))
            if waiting:
                return built
        return built

    def _job(self, subscriber: Subscriber, key: Key) -> _Job | None:
        """(Under the lock.) The person's build waiting or running, or a new one; None when
        :data:`MAX_WAITING` people's are."""
        email = subscriber.email
        job = self._pending.get(email)
        if job is None:
            if len(self._pending) >= MAX_WAITING:
                return None
            job = self._pending[email] = _Job(subscriber, key)
            job.future = self._executor.submit(self._run, job)
            job.future.add_done_callback(lambda _: self._forget(email, job))
        return job

    def _forget(self, email: str, job: _Job) -> None:
        with self._lock:
            if self._pending.get(email) is job:
                del self._pending[email]

    def _run(self, job: _Job) -> Built:
        """In the worker: build the newest key the job was asked for (from now on, polls with other
        rules wait for it and then start a build of their own)."""
        with self._lock:
            job.started = True
            subscriber, key = job.subscriber, job.key
        return self._build(subscriber, key)

    def _build(self, subscriber: Subscriber, key: Key) -> Built:
        """In the worker: match, explain, write, then keep the result."""
        entries = self._matched(subscriber, key)
        papers = paper_cache(subscriber.layout).views(entries)
        body = atom_feed(self._head(subscriber, key[0]), entries, papers)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        with self._lock:
            prior = self._built.pop(subscriber.email, None)
            if prior is not None:
                self._bytes -= len(prior.body)
            now = self.front.clock().astimezone(UTC).replace(microsecond=0)
            since = prior.last_modified if prior is not None and prior.etag == etag else now
            built = Built(key, body, etag, since)
            self._built[subscriber.email] = built
            self._bytes += len(body)
            while self._bytes > CACHE_BYTES and len(self._built) > 1:
                _, old = self._built.popitem(last=False)
                self._bytes -= len(old.body)
        return built

    def _matched(self, subscriber: Subscriber, key: Key) -> list[DigestEntry]:
        """The window's papers ``subscriber``'s rules match: newest day first, each day in the
        email's order (:func:`~digest.matching.ranking.rank_entries`), the first :data:`MAX_ENTRIES`."""
        today, store_key, _, _ = key
        if self._recent_key != (today, store_key):
            start = today - timedelta(days=FEED_DAYS - 1)
            items = [i for i in self.front.read_store().items_listed_between(start, today) if not i.withdrawn]
            self._recent, self._recent_key = (items, Matcher(ItemIndex(items))), (today, store_key)
        items, matcher = self._recent
        try:
            rules = parse_rules(subscriber.rules)
        except RuleError as exc:  # a hand-edited store; the cycle names it too
            log.warning("a feed shows nothing for a subscriber whose rules do not parse: %s", exc)
            return []
        ranked = rank_entries([DigestEntry(items[doc], found) for doc, found in matcher.match(rules).items()])
        ranked.sort(key=lambda entry: entry.item.listed_on, reverse=True)  # stable: each day keeps its order
        return ranked[:MAX_ENTRIES]

    def _head(self, subscriber: Subscriber, today: date) -> FeedHead:
        front = self.front
        self_url = feed_url(front.signer, front.settings.public_url, subscriber)
        return FeedHead(
            id=f"urn:uuid:{uuid.uuid5(FEED_NAMESPACE, self_url.rsplit('/', 1)[1])}",
            title=f"{front.settings.site_name}: your papers",
            subtitle=f"The papers your rules matched in the last {FEED_DAYS} days, newest first.",
            self_url=self_url,
            home_url=front.link("/"),
            site_name=front.settings.site_name,
            updated_if_empty=day_start(today),
        )


class Feed:
    """The feed's route."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.builder = FeedBuilder(front)
        self.addresses = FeedAddresses(front, self.builder.store_version)

    async def serve(self, request: Request) -> Response:
        front = self.front
        if not front.limits.ip_feeds.allow(front.client_ip(request), front.now_seconds()):
            return PlainTextResponse("Too many requests: try again later.\n", 429, headers={"retry-after": "60"})
        subscriber = await self.addresses.holder(request.path_params["token"])
        if subscriber is None:
            raise HTTPException(404)  # the site's own 404: the same as for any address that is not here
        if subscriber == "gone":  # left, or took a new address: "Gone" tells a feed reader to stop asking
            return PlainTextResponse("This feed has ended.\n", 410, headers={"cache-control": "no-store"})
        try:
            built = await self.builder.get(subscriber)
        except DigestError as exc:
            log.error("a feed could not be built: %s", exc)
            built = None
        if built is None:
            return PlainTextResponse("Busy: try again in a minute.\n", 503, headers={"retry-after": "60"})
        headers = {
            "etag": built.etag,
            "last-modified": format_datetime(built.last_modified, usegmt=True),
            "cache-control": CACHE_CONTROL,
            "x-robots-tag": "noindex",
        }
        if not_modified(request.headers, built):
            return Response(status_code=304, headers=headers)
        return Response(built.body, media_type=MEDIA_TYPE, headers=headers)
