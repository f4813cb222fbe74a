"""The manage page's suggested rule changes (from the person's votes), and ``POST /suggestion``, which
accepts one.

Why here and not at vote time: a suggestion is counted against the last 30 days' stored papers
with the person's current rules (:mod:`digest.matching.suggest`), which change with every day and
every edit; the page computes them when shown and keeps the latest per person until their rules,
votes or the stored papers change. A visitor chooses the rules, so the work is kept apart
(:class:`SuggestionWorker`): one thread of its own (never the event loop, nor the thread pool the
other pages need), one computation per person at a time, at most :data:`MAX_QUEUED` waiting, and
the page waits :data:`WAIT_SECONDS` at most: later, it says they are being worked out. Accepting is a
POST with the signed manage token, like the page's own buttons, and goes through the same rule
checks as a manual edit; a suggestion whose rule is no longer there (accepted already, or edited
meanwhile) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.errors import CycleLockedError, DigestError, TokenError
from digest.matching.rules import TEXT_FIELDS, ItemIndex
from digest.matching.suggest import MIN_REJECTED, RECENT_DAYS, Suggestion, suggest
from digest.matching.syntax import MAX_RULE_LENGTH
from digest.models import Item, Subscriber
from digest.state.backend import StoreBackend
from digest.state.subscriptions import check_rules
from digest.web.forms import BUSY
from digest.web.front import Front

log = logging.getLogger(__name__)

CACHED_PEOPLE = 256
MAX_QUEUED = 16  # people whose suggestions are being worked out or wait for it; more: "reload later"
WAIT_SECONDS = 2.0  # the manage page waits this long for them, then is shown without them

Key = tuple[object, ...]  # what a person's suggestions depend on: rules, votes, day, stored papers


@dataclass(frozen=True, slots=True)
class Suggested:
    """What the manage page's section shows: the suggestions and how many papers were marked each way."""

    suggestions: tuple[Suggestion, ...]
    rejected: int
    liked: int
    needed: int = MIN_REJECTED
    pending: bool = False  # being worked out (or waiting for it): the page says to reload in a minute


class SuggestionCache:
    """The latest suggestions per person, by what they depend on (rules, votes, stored papers, day)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, tuple[tuple[object, ...], tuple[Suggestion, ...]]] = {}
        self._recent: tuple[tuple[object, ...], list[Item], ItemIndex] | None = None

    def recent(self, store: StoreBackend, today: date) -> tuple[list[Item], ItemIndex]:
        """The last :data:`RECENT_DAYS` days' stored papers and their index, tokenized once per day
        and new papers for everyone (most of a suggestion's cost), as the live preview does."""
        key = (today, store.seen_count, store.prune_horizon)
        with self._lock:
            if self._recent is None or self._recent[0] != key:
                items = store.items_listed_between(today - timedelta(days=RECENT_DAYS - 1), today)
                index = ItemIndex(items)
                for name in TEXT_FIELDS:
                    index.field(name)
                self._recent = (key, items, index)
            return self._recent[1], self._recent[2]

    def get(self, email: str, key: tuple[object, ...]) -> tuple[Suggestion, ...] | None:
        with self._lock:
            found = self._found.get(email)
        return found[1] if found is not None and found[0] == key else None

    def put(self, email: str, key: tuple[object, ...], suggestions: tuple[Suggestion, ...]) -> None:
        with self._lock:
            if len(self._found) >= CACHED_PEOPLE:
                self._found.clear()
            self._found[email] = (key, suggestions)


class SuggestionWorker:
    """Works out suggestions in one thread of its own (see the module's docstring), like the feed's
    :class:`~digest.web.feed.FeedBuilder`: a person's computation is shared by every page shown
    meanwhile, and a page is never kept waiting by it for more than :data:`WAIT_SECONDS`."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.cache = SuggestionCache()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-suggest")
        self._lock = threading.RLock()  # a done future's callback runs at once, under it
        self._pending: dict[str, tuple[Key, Future[tuple[Suggestion, ...] | None]]] = {}  # by address

    async def section(self, subscriber: Subscriber, votes: dict[str, int]) -> dict[str, Any]:
        """The manage page's context for ``_suggestions.html`` from the person's ``votes``: nothing to
        compute (and no hand-off to the worker) for the many who have not marked two papers "not
        for me"."""
        email = subscriber.email
        rejected = sum(1 for vote in votes.values() if vote < 0)
        liked = len(votes) - rejected
        if rejected < MIN_REJECTED:
            return {"suggested": Suggested((), rejected, liked)}
        # Only now: on PostgreSQL it counts the table of every paper ever seen, on each page shown.
        seen = await self.front.read(lambda store: store.seen_count)
        key = (subscriber.rules, tuple(votes.items()), self.front.today(), seen)
        found = self.cache.get(email, key)
        if found is None:
            found = await self.wait(self.start(subscriber, votes, key))
        return {"suggested": Suggested(found or (), rejected, liked, pending=found is None)}

    def start(self, subscriber: Subscriber, votes: dict[str, int], key: Key) -> Future[Any] | None:
        """The computation of ``key`` for ``subscriber``: the one under way (or waiting) for them, or a
        new one; None when one of theirs for another key is (their rules changed meanwhile: it
        starts once that one is done) or :data:`MAX_QUEUED` people's are."""
        email = subscriber.email
        with self._lock:
            found = self._pending.get(email)
            if found is not None:
                return found[1] if found[0] == key else None
            if len(self._pending) >= MAX_QUEUED:
                return None
            future = self._executor.submit(self._compute, subscriber, votes, key)
            self._pending[email] = (key, future)
            future.add_done_callback(lambda done: self._forget(email, done))
        return future

    def _forget(self, email: str, future: Future[Any]) -> None:
        with self._lock:
            if email in self._pending and self._pending[email][1] is future:
                del self._pending[email]

    @staticmethod
    async def wait(future: Future[tuple[Suggestion, ...] | None] | None) -> tuple[Suggestion, ...] | None:
        """The computation's result if it is ready within :data:`WAIT_SECONDS`, else None (it goes on)."""
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), WAIT_SECONDS)
        except TimeoutError:
            return None

    def _compute(self, subscriber: Subscriber, votes: dict[str, int], key: Key) -> tuple[Suggestion, ...] | None:
        """In the worker: the suggestions of ``key`` (the voted papers read in one query), kept; None
        when the store cannot be read (the page asks to reload)."""
        found = self.cache.get(subscriber.email, key)
        if found is not None:
            return found
        try:
            store = self.front.read_store()
            recent, index = self.cache.recent(store, self.front.today())
            voted = store.items(votes)
        except DigestError as exc:
            log.warning("suggestions could not be worked out: %s", exc)
            return None
        found = tuple(suggest(subscriber.rules, recent, voted, votes, index=index))
        self.cache.put(subscriber.email, key, found)
        return found


def edited(rules: tuple[str, ...], rule: str, changed: str) -> tuple[str, ...] | None:
    """``rules`` with ``rule`` replaced by ``changed`` (added, when ``rule`` is empty); None when
    the suggestion no longer applies (the rule is gone, or the new one is there already)."""
    current = [r.strip() for r in rules]
    if (rule and rule not in current) or (not rule and changed in current):
        return None
    new = [changed if r == rule else r for r in current] if rule else [*current, changed]
    return tuple(dict.fromkeys(new))


def accept(store: StoreBackend, email: str, rule: str, changed: str) -> str:
    """Apply the suggestion to ``email``'s rules: "saved", "left" or "stale" (it no longer applies)."""
    subscriber = store.subscriber(email)
    if subscriber is None:
        return "left"
    rules = edited(subscriber.rules, rule, changed)
    if rules is None:
        return "stale"
    store.save_subscriber(replace(subscriber, rules=rules))
    return "saved"


class Suggestions:
    """``POST /suggestion``: the Accept button of a suggestion on the manage page."""

    def __init__(self, front: Front) -> None:
        self.front = front

    def back(self, token: str, title: str, text: str, status: int) -> Response:
        """A message with the way back to the manage page (nothing was changed)."""
        link = "/manage?" + urlencode({"token": token}) + "#suggestions"
        return self.front.message(title, text, status, action_url=link, action_label="Back to your subscription")

    async def post(self, request: Request) -> Response:
        front = self.front
        if not front.limits.ip_votes.allow(front.client_ip(request), front.now_seconds()):
            return front.message("Slow down", "Too many requests from your network. Please wait a minute.", 429)
        form = await request.form()
        token, rule, changed = (str(form.get(name, "")).strip() for name in ("token", "rule", "changed"))
        try:
            email = str(front.token_data("manage", token)["e"])
        except TokenError as exc:
            return front.bad_link(exc, "manage")
        problem = front.form_problem(request, form)
        if problem:
            return self.back(token, "Nothing was changed", problem, 400)
        if not changed or len(rule) > MAX_RULE_LENGTH or len(changed) > MAX_RULE_LENGTH:
            return self.back(token, "Nothing was changed", "This suggestion is not one this page made.", 400)
        current = await front.subscriber(email)
        if current is None:
            return front.message("Not subscribed", "This address is not subscribed (any more).", 404, show_home=True)
        rules = edited(current.rules, rule, changed) or current.rules  # stale: the writer says so
        check = await run_in_threadpool(check_rules, "\n".join(rules))
        if check.errors:
            return self.back(token, "Nothing was changed", "The changed rule does not work: " + check.errors[0], 400)
        return await self.apply(token, email, rule, changed)

    async def apply(self, token: str, email: str, rule: str, changed: str) -> Response:
        try:
            outcome = await self.front.write(lambda store: accept(store, email, rule, changed))
        except CycleLockedError:
            return self.front.retry_later(self.back(token, "Not changed yet", BUSY, 503))
        if outcome == "left":
            return self.front.message("Not subscribed", "This address is not subscribed (any more).", 404)
        if outcome == "stale":
            text = "This change was made already, or your rules were edited since: nothing was changed."
            return self.back(token, "Nothing to change", text, 409)
        return RedirectResponse("/manage?" + urlencode({"token": token, "done": "saved"}) + "#suggestions", 303)
