"""Costly requests to the web front cannot take it over (an attacker's review, two findings).

1. ``GET /manage`` works out suggested rule changes from the person's votes; with costly rules one
   computation took half a minute, in the thread pool every page shares. Now they are worked out
   in one thread of their own, one per person at a time, a bounded queue, the page waiting a
   moment at most; the work itself is bounded; ``/manage`` is limited per client (``/unsubscribe``
   never is).
2. The feed's one builder queued a build per (person, rules): one person changing rules and
   polling kept another's feed waiting. Now one build per person waits or runs at a time.

Over real HTTP against the real app (:mod:`tests.web_support`); where a computation or a build
must take long for the test to see who waits for it, it is held on an event or slowed.
"""

from __future__ import annotations

import html as htmllib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import digest.matching.suggest as suggest_module
import digest.web.feed as feed_module
import digest.web.suggestions as suggestions_module
from digest.matching.explain import try_rule
from digest.matching.rules import Matcher, parse_rule
from digest.models import Item, Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.postgres.store import PostgresStore
from digest.state.store import Store
from digest.web.app import WebLimits
from digest.web.atom import FeedHead
from digest.web.feed import feed_url
from tests.conftest import pass_store
from tests.email_fixtures import seed_items as saved_listings
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.web_support import SECRET, Clock, csrf_of, make_settings, running, sample_items

ADA = "ada@example.org"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SIGNER = Signer(SECRET)
WORKING = "Your suggestions are being worked out"
REJECTED = ("LLIA", "Live Avatar", "SoulX-FlashTalk")
# The attacker's rules: broad words and regular expressions that match nearly every paper.
BROAD = ["model", "method", "learning", "data", "performance", "task", "language", "image", "training", "video"]
REGEXES = ["/(a|e).*(o|i)|pca/", "/(o|i).*(a|e)|rnn/", "/(e|u).*(a|o)|gan/"]


def ids_of(items: list[Item], *starts: str) -> list[str]:
    return [item.id for item in items if item.title.startswith(starts)]


def manage_link(email: str = ADA) -> str:
    return "/manage?token=" + SIGNER.sign("manage", email)


def seeded(tmp_path: Path, items: list[Item], people: dict[str, tuple[str, ...]]) -> Settings:
    """A site whose store holds ``items`` and ``people`` (address → rules), each with the three
    avatar papers marked "not for me" and LongLive "more like this"."""
    data_dir = tmp_path / "data"
    with pass_store(data_dir) as store:
        store.upsert_items(items, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
        for email, rules in people.items():
            store.save_subscriber(Subscriber(email, rules, subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
            for paper in ids_of(items, *REJECTED):
                store.record_vote(email, paper, -1, NOW)
            store.record_vote(email, ids_of(items, "LongLive")[0], 1, NOW)
    return make_settings(data_dir, None)


class HeldSuggestions:
    """``suggest`` as the web calls it, held until :meth:`release`: how many ran, and at most how
    many at once."""

    def __init__(self) -> None:
        self.real: Callable[..., Any] = suggestions_module.suggest
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.calls = self.running = self.most = self.finished = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.released.wait(60)
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1
                self.finished += 1

    def release(self) -> None:
        self.released.set()

    def wait_finished(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.finished < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.finished >= count, f"{self.finished} of {count} computations finished"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldSuggestions]:
    held = HeldSuggestions()
    monkeypatch.setattr(suggestions_module, "suggest", held)
    try:
        yield held
    finally:
        held.release()  # never leave the worker (or, before the fix, the shared pool) waiting


@pytest.fixture
def items(sample_days: dict[str, list[dict[str, Any]]]) -> list[Item]:
    return sample_items(sample_days)


def suggestions_shown(client: httpx.Client, email: str = ADA) -> str:
    """Reload the manage page until it shows its suggestions (not "being worked out"); their text."""
    deadline = time.monotonic() + 30
    while True:
        page = client.get(manage_link(email))
        assert page.status_code == 200
        if WORKING not in page.text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    section = htmllib.unescape(page.text[page.text.index('id="suggestions"') :])
    assert WORKING not in section
    return section


def save_rules(client: httpx.Client, rules: str, email: str = ADA) -> httpx.Response:
    token = SIGNER.sign("manage", email)
    page = client.get(f"/manage?token={token}")
    data = {"csrf": csrf_of(page.text), "token": token, "action": "save", "rules": rules, "layout": "full"}
    return client.post("/manage", data=data)


# -- 1. suggestions -----------------------------------------------------------------------------------
def test_forty_manage_pages_at_once_leave_the_front_responsive_and_start_one_computation(
    tmp_path: Path, items: list[Item], held: HeldSuggestions, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = seeded(tmp_path, items, {ADA: ("real-time", "4090")})
    with running(settings, Clock()) as client:
        with ThreadPoolExecutor(max_workers=40) as pool:
            pages = list(pool.map(lambda _: httpx.get(client.base_url.join(manage_link()), timeout=20), range(40)))
        assert [page.status_code for page in pages] == [200] * 40
        assert all(WORKING in page.text for page in pages), "the page is shown without waiting for them"
        # While the computation is still held, the pages that need the shared thread pool answer.
        assert client.get("/healthz", timeout=10).status_code == 200
        saved = save_rules(client, "real-time\n4090\nvideo diffusion")
        assert saved.status_code == 200 and "Your changes are saved." in saved.text
        assert WORKING in client.get(manage_link()).text
        assert held.calls == 1, "one computation for the person, however many pages and rule changes"
        held.release()
        held.wait_finished(1)
        shown = suggestions_shown(client)  # their new rules: a computation of its own, once the first is done
    assert "real-time → real-time -avatar: removes" in shown
    assert held.calls == 2 and held.most == 1


def test_suggestions_wait_in_a_bounded_queue_and_the_others_are_asked_to_reload(
    tmp_path: Path, items: list[Item], held: HeldSuggestions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suggestions_module, "MAX_QUEUED", 3)
    people = {f"reader{n}@example.org": ("real-time", "4090") for n in range(6)}
    settings = seeded(tmp_path, items, people)

    def one_by_one(*_: Any) -> None:
        raise AssertionError("the voted papers are read in one query (items), not one by one")

    monkeypatch.setattr(Store, "item", one_by_one)
    monkeypatch.setattr(PostgresStore, "item", one_by_one)
    with running(settings, Clock()) as client:
        with ThreadPoolExecutor(max_workers=6) as pool:
            pages = list(pool.map(lambda email: client.get(manage_link(email), timeout=20), people))
        assert [page.status_code for page in pages] == [200] * 6
        assert all(WORKING in page.text for page in pages)
        held.release()
        held.wait_finished(3)
        time.sleep(0.3)
        assert held.calls == 3, "three waited for the worker; the others started nothing"
        for email in people:  # a reload works out the ones that found the queue full
            assert "real-time → real-time -avatar" in suggestions_shown(client, email)
    assert held.calls == 6 and held.most == 1


def test_counting_an_edit_decides_the_edited_rule_alone_within_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    items = saved_listings()
    votes = dict.fromkeys(ids_of(items, *REJECTED), -1)
    rules = [*BROAD, *REGEXES, "real-time", "avatar"]

    def whole_list(*_: Any) -> None:
        raise AssertionError("the whole rule list is matched again for an edit")

    monkeypatch.setattr(Matcher, "match", whole_list)
    (best,) = suggest_module.suggest(rules, items, [], votes)
    assert (best.rule, best.changed) == ("", "-avatar")
    monkeypatch.undo()  # `digest try` matches as it always does

    def mine(chosen: list[str]) -> set[str]:  # what `digest try` lists, rule by rule
        found: set[str] = set()
        for rule in chosen:
            found |= {entry.item.id for entry in try_rule(parse_rule(rule), items).entries}
        return found

    before = mine(rules)
    assert (best.matched, best.removed) == (len(before), len(before & mine(["avatar"])))
    assert best.rejected_removed == 3
    assert suggest_module.suggest(rules, items, [], votes, seconds=0) == [], "nothing past the deadline"
    monkeypatch.setattr(suggest_module, "MAX_EDITS", 0)
    assert suggest_module.suggest(rules, items, [], votes) == [], "no edit counted past the budget"


@pytest.mark.parametrize(
    "kind", [pytest.param("tinydb", marks=pytest.mark.tinydb_only("its TinyDB case: first pass")), "postgresql"]
)
def test_the_voted_papers_are_read_in_one_go_from_either_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    papers = [Item(f"2611.{n:05d}", "hf_papers", f"Paper {n}", "abstract", "u", date(2026, 11, 20)) for n in range(4)]
    store = Store(tmp_path) if kind == "tinydb" else PostgresStore(request.getfixturevalue("postgres_url"))
    try:
        store.upsert_items(papers, NOW)
        wanted = ["2611.00003", "missing", "2611.00001", "2611.00003"]
        assert [item.id for item in store.items(wanted)] == ["2611.00003", "2611.00001"]
        assert store.items([]) == []
    finally:
        store.close()


def test_manage_is_limited_per_client_and_unsubscribing_never_is(tmp_path: Path, items: list[Item]) -> None:
    settings = seeded(tmp_path, items, {ADA: ("real-time",), "bob@example.org": ("4090",)})
    clock = Clock()
    with running(settings, clock, WebLimits(manage_per_ip=4)) as client:
        page = client.get(manage_link())
        assert client.get(manage_link()).status_code == 200
        token = SIGNER.sign("manage", ADA)
        post = {"csrf": csrf_of(page.text), "token": token, "action": "pause"}
        assert client.post("/manage", data=post).status_code == 200  # the third use, and its page the fourth
        over = client.get(manage_link())
        assert over.status_code == 429 and over.headers["retry-after"] == "60"
        assert client.post("/manage", data=post).status_code == 429
        assert client.get(manage_link("bob@example.org")).status_code == 429, "per client, whoever they manage"
        # The page that says "slow down" still offers to unsubscribe, and unsubscribing is never limited.
        offered = re.search(r'href="(/unsubscribe\?token=[^"]+)"', over.text)
        assert offered is not None
        for _ in range(5):
            shown = client.get(htmllib.unescape(offered.group(1)))
            assert shown.status_code == 200
        action = re.search(r'<form method="post" action="([^"]+)"', shown.text)
        assert action is not None
        done = client.post(htmllib.unescape(action.group(1)), data={"csrf": csrf_of(shown.text)})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        clock.advance(seconds=61)
        assert client.get(manage_link("bob@example.org")).status_code == 200, "a minute later"
    with pass_store(settings.data_dir, write=False) as store:
        assert store.subscriber(ADA) is None


# -- 2. the feed's queue ------------------------------------------------------------------------------
def test_one_person_changing_rules_and_polling_cannot_hold_up_anothers_feed(
    tmp_path: Path, items: list[Item], monkeypatch: pytest.MonkeyPatch
) -> None:
    attacker, victim = "mallory@example.org", "victim@example.org"
    settings = seeded(tmp_path, items, {attacker: ("real-time",), victim: ("4090",)})
    started: list[tuple[float, str]] = []  # each build: when it started, and whose
    real_atom_feed: Callable[..., bytes] = feed_module.atom_feed

    def slow_atom_feed(head: FeedHead, *args: Any) -> bytes:
        started.append((time.monotonic(), head.self_url))
        time.sleep(0.3)  # a costly build (the attacker's rules)
        return real_atom_feed(head, *args)

    monkeypatch.setattr(feed_module, "atom_feed", slow_atom_feed)
    with pass_store(settings.data_dir, write=False) as store:
        feeds = {email: feed_url(SIGNER, settings.public_url, store.subscriber(email)) for email in (attacker, victim)}  # type: ignore[arg-type]
    with running(settings, Clock()) as client, ThreadPoolExecutor(max_workers=20) as pool:
        polls = []
        for n in range(20):  # new rules, then a poll that is not waited for
            assert save_rules(client, f"real-time\nwords{n}", attacker).status_code == 200
            polls.append(pool.submit(httpx.get, feeds[attacker], timeout=60))
        asked = time.monotonic()
        answer = httpx.get(feeds[victim], timeout=60)  # "no hang"
        assert answer.status_code == 200
        assert all(poll.result().status_code in (200, 503) for poll in polls)
    (victims_build,) = [at for at, url in started if url == feeds[victim]]
    # At most the attacker's one waiting build (and one that slipped in while the victim's poll found its address).
    ahead = [at for at, url in started if url == feeds[attacker] and asked < at < victims_build]
    assert len(ahead) <= 2, f"{len(ahead)} of the attacker's builds went ahead of the victim's feed"
