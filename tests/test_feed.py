"""The personal Atom feed, ``/feed/<token>.xml``, through the real web front (uvicorn on 127.0.0.1)
over a real store seeded with the saved Daily Papers listings (``../shared/seeds``).

Valid Atom is checked twice, independently: feedparser must read it without complaint (bozo 0),
and lxml must validate it against RFC 4287's own RELAX NG schema (Appendix B, tests/data/atom.rng)
plus the RFC's two Schematron rules, checked here with XPath. The matches, their order and the
"why" are compared with what the cycle's plan and the email's paper views say.
"""

from __future__ import annotations

import base64
import html as htmllib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import feedparser
import httpx
import pytest
from itsdangerous import URLSafeSerializer
from lxml import etree

import digest.web.feed as feed_module
import digest.web.feed_addresses as feed_addresses_module
from digest.cycle.plan import plan_digests
from digest.mail.papers import render_papers
from digest.models import DigestEntry, Item, Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import is_postgres, open_backend
from digest.state.postgres.store import PostgresStore
from digest.web.access_log import TokenRedactingFilter
from digest.web.app import WebLimits, create_app
from digest.web.atom import FeedHead, atom_feed
from digest.web.feed import MAX_ENTRIES, feed_url
from digest.web.feed_addresses import FeedAddresses
from tests.conftest import cli_env, run_cli
from tests.email_fixtures import AS_OF, real_day, seed_items
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.web_support import SECRET, Clock, csrf_of, live_server, make_settings, running

ADA = "ada@example.org"
RULES = ("video diffusion", "4090", "gaussian splatting", "real-time")
ATOM = {"a": "http://www.w3.org/2005/Atom"}
SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parent / "data" / "atom.rng")))
SIGNER = Signer(SECRET)
ATOM_TYPE = "application/atom+xml; charset=utf-8"


def older(items: list[Item], days: int) -> list[Item]:
    """The same papers under new ids, listed ``days`` before the sample's day."""
    return [replace(i, id=f"{i.id}-{days}d", listed_on=AS_OF - timedelta(days=days)) for i in items]


def seeded(tmp_path: Path, subscribers: tuple[Subscriber, ...], items: list[Item] | None = None) -> Settings:
    """Settings for a site whose store holds ``items`` (default: the saved listings on the sample's
    day, again 3 days before it, and again 40 days before it, out of the feed's window)."""
    settings = make_settings(tmp_path / "data", None)
    papers = seed_items()
    items = items if items is not None else papers + older(papers, 3) + older(papers, 40)
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.upsert_items(items, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
        store.save_subscribers(subscribers)
    return settings


def url_of(settings: Settings, email: str) -> str:
    """The feed address of a subscriber seeded here (never given a new address)."""
    return feed_url(SIGNER, settings.public_url, Subscriber(email, ()))


def valid_atom(body: bytes) -> Any:
    """``body`` parsed by feedparser, after both validators have accepted it."""
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    document = etree.fromstring(body)
    assert SCHEMA.validate(document), SCHEMA.error_log
    # RFC 4287's Schematron rules, which RELAX NG validators skip.
    entries = document.xpath("a:entry", namespaces=ATOM)
    assert document.xpath("a:author", namespaces=ATOM) or not document.xpath("a:entry[not(a:author)]", namespaces=ATOM)
    for entry in entries:
        assert entry.xpath("a:link[@rel='alternate'] or a:link[not(@rel)] or a:content", namespaces=ATOM)
    ids = [entry.findtext("a:id", namespaces=ATOM) for entry in entries]
    assert len(set(ids)) == len(ids) and all(i and i.startswith("urn:uuid:") for i in ids)
    return parsed


def test_the_feed_is_valid_atom_with_the_emails_matches_order_and_reasons(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    with running(settings, Clock()) as client:
        answer = client.get(url_of(settings, ADA))
        again = client.get(url_of(settings, ADA))
    assert answer.status_code == 200 and answer.headers["content-type"] == ATOM_TYPE
    assert answer.content == again.content, "the same feed, byte for byte, for the same store"
    parsed = valid_atom(answer.content)
    assert parsed.feed.links[0].href == url_of(settings, ADA)

    # The same matches and order as the email's plan: newest day first, each day in the email's order.
    papers = seed_items()
    stored = papers + older(papers, 3)
    plan = plan_digests([Subscriber(ADA, RULES)], stored, lambda *_: set(), AS_OF - timedelta(29), date.min, AS_OF)
    planned = plan.digests[0].entries
    expected = [e for e in planned if e.item.listed_on == AS_OF] + [e for e in planned if e.item.listed_on < AS_OF]
    assert len(expected) > 10, "the seeds match these rules on both days"
    assert [e.link for e in parsed.entries] == [e.item.url for e in expected][:MAX_ENTRIES]
    assert all(e.published.startswith(("2026-11-20", "2026-11-17")) for e in parsed.entries), "not the 40-day-old"

    # Why each one is there, as the email says it: its "Matched:" line and its highlighted words.
    views = render_papers(expected[:MAX_ENTRIES], "full")
    for entry, view in zip(parsed.entries, views, strict=True):
        assert " ".join(entry.summary.split()).startswith(" ".join(view.rules_wrapped.split()))
        assert "Why it matched:" in entry.content[0].value
        assert entry.content[0].type == "text/html"
        assert {tag.term for tag in entry.tags} <= set(RULES)
    # The matched words marked as in the email (<mark> for colour, <b> where a reader drops <mark>).
    contents = etree.fromstring(answer.content).xpath("a:entry/a:content/text()", namespaces=ATOM)
    assert sum("<mark><b>" in html for html in contents) > len(contents) / 2
    assert any("<b>" in entry.content[0].value for entry in parsed.entries), "what a sanitizing reader keeps"


def test_hostile_text_stays_text_and_characters_xml_cannot_hold_are_dropped(tmp_path: Path) -> None:
    evil = Item(
        id="evil-1",
        source="hf_papers",
        title='Evil ]]> <script>alert("x")</script> video diffusion\x00\x0b\x1f & co',
        abstract="We run video diffusion <img src=x onerror=alert(1)> ]]> here\x07.",
        url="https://huggingface.co/papers/evil?a=1&b=<2>",
        listed_on=AS_OF,
        authors=("Mallory <m@example.org>", "\x01"),
        github_repo="https://github.com/example/repo?x=\"'><script>",
    )
    settings = seeded(tmp_path, (Subscriber(ADA, ("video diffusion",)),), [evil])
    with running(settings, Clock()) as client:
        body = client.get(url_of(settings, ADA)).content
    parsed = valid_atom(body)
    assert b"<script" not in body and b"]]>" not in body and b"\x00" not in body
    (entry,) = parsed.entries
    assert entry.title == 'Evil ]]> <script>alert("x")</script> video diffusion & co'
    document = etree.fromstring(body)
    html = document.findtext("a:entry/a:content", namespaces=ATOM)
    assert "&lt;script&gt;" in html and "<script" not in html and "<img" not in html
    assert "<mark><b>video diffusion</b></mark>" in html
    assert [a.name for a in entry.authors] == ["Mallory <m@example.org>"]


def test_lone_surrogates_and_other_non_characters_never_reach_the_document() -> None:
    item = Item(
        id="s", source="hf_papers", title="A \ud800 title \ufffe 4090", abstract="x", url="https://e/", listed_on=AS_OF
    )
    entries = [DigestEntry(item, ())]
    head = FeedHead(
        "urn:uuid:0", "t", "s", "https://e/feed.xml", "https://e/", "site", datetime(2026, 1, 1, tzinfo=UTC)
    )
    body = atom_feed(head, entries, render_papers(entries, "full"))
    assert valid_atom(body).entries[0].title == "A  title  4090"


def test_a_forged_tampered_foreign_or_oversized_token_gets_the_plain_404(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    good = SIGNER.feed_token(Subscriber(ADA, ()))
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    forged = [
        tampered,
        Signer("another-secret").feed_token(Subscriber(ADA, ())),
        URLSafeSerializer(SECRET, salt="digest.feed").dumps({"e": ADA}),  # the signed form of the first release
        SIGNER.sign("manage", ADA),  # a real token, for another purpose
        SIGNER.sign("unsubscribe", ADA),
        "eyJlIjoiYWRhQGV4YW1wbGUub3JnIn0",  # the address in base64
        good[:-1],
        good + "x" * 4000,  # oversized
        "x" * 6000,
    ]
    with running(settings, Clock()) as client:
        unknown = client.get("/no-such-page")
        for token in forged:
            answer = client.get(f"/feed/{token}.xml")
            assert answer.status_code == 404, token[:60]
            assert answer.text == unknown.text, "the same page as any address that is not here"
            assert ADA not in answer.text
        assert client.get(f"/feed/{good}.xml").status_code == 200


def test_someone_who_left_gets_410_and_nothing_about_them(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    with running(settings, Clock()) as client:
        assert client.get(url_of(settings, ADA)).status_code == 200
        left = client.post(
            f"/unsubscribe?token={SIGNER.sign('unsubscribe', ADA)}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert left.status_code == 200
        gone = client.get(url_of(settings, ADA))
        never = client.get(url_of(settings, "nobody@example.org"))
    assert gone.status_code == 410 and gone.text == "This feed has ended.\n"
    assert never.status_code == 404, "an address never given out is like any other unknown one"


def test_conditional_gets_answer_304_until_the_rules_change(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    clock = Clock()
    with running(settings, clock) as client:
        first = client.get(url_of(settings, ADA))
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        assert first.headers["cache-control"].startswith("private")
        clock.advance(hours=1)
        by_tag = client.get(url_of(settings, ADA), headers={"If-None-Match": etag})
        by_list = client.get(url_of(settings, ADA), headers={"If-None-Match": f'"other", W/{etag}'})
        by_date = client.get(url_of(settings, ADA), headers={"If-Modified-Since": modified})
        for answer in (by_tag, by_list, by_date):
            assert answer.status_code == 304 and answer.content == b"" and answer.headers["etag"] == etag
        earlier = format_datetime(clock.now - timedelta(days=2), usegmt=True)
        assert client.get(url_of(settings, ADA), headers={"If-Modified-Since": earlier}).status_code == 200
        assert client.get(url_of(settings, ADA), headers={"If-Modified-Since": "not a date"}).status_code == 200
        assert client.head(url_of(settings, ADA)).headers["etag"] == etag

        manage = client.get(f"/manage?token={SIGNER.sign('manage', ADA)}")
        saved = client.post(
            "/manage",
            data={
                "csrf": csrf_of(manage.text),
                "token": SIGNER.sign("manage", ADA),
                "action": "save",
                "rules": "4090",
                "layout": "full",
            },
        )
        assert saved.status_code == 200
        changed = client.get(url_of(settings, ADA), headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.headers["last-modified"] != modified
    assert {tag.term for e in valid_atom(changed.content).entries for tag in e.tags} == {"4090"}


def test_fifty_polls_at_once_all_succeed_each_feed_is_built_once_and_pages_stay_responsive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = tuple(Subscriber(f"reader{n}@example.org", (RULES[n % len(RULES)], "model")) for n in range(10))
    settings = seeded(tmp_path, people)
    builds: list[str] = []
    real_atom_feed: Callable[..., bytes] = feed_module.atom_feed

    def slow_atom_feed(head: FeedHead, *args: Any) -> bytes:
        builds.append(head.self_url)
        time.sleep(0.05)  # widen the window in which polls of one feed arrive together
        return real_atom_feed(head, *args)

    monkeypatch.setattr(feed_module, "atom_feed", slow_atom_feed)
    urls = [url_of(settings, people[n % len(people)].email) for n in range(50)]
    health: list[float] = []
    done = threading.Event()
    with running(settings, Clock()) as client:

        def watch() -> None:
            while not done.is_set():
                started = time.monotonic()
                assert client.get("/healthz").status_code in (200, 503)
                health.append(time.monotonic() - started)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(max_workers=50) as pool:
                answers = list(pool.map(lambda url: httpx.get(url, timeout=60), urls))
        finally:
            done.set()
            watcher.join()
    assert [a.status_code for a in answers] == [200] * 50
    bodies: dict[str, bytes] = {}
    for url, answer in zip(urls, answers, strict=True):
        assert bodies.setdefault(url, answer.content) == answer.content
    assert sorted(builds) == sorted(set(urls)), "one build per feed, however many polls at once"
    assert health and max(health) < 5, "the other pages answer while feeds are built"
    for body in bodies.values():
        valid_atom(body)


def test_polls_are_rate_limited_per_client(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    with running(settings, Clock(), WebLimits(feeds_per_ip=3)) as client:
        codes = [client.get(url_of(settings, ADA)).status_code for _ in range(3)]
        over = client.get(url_of(settings, ADA))
        forged = client.get("/feed/forged.xml")
    assert codes == [200] * 3
    assert over.status_code == 429 and over.headers["retry-after"] == "60"
    assert forged.status_code == 429, "forged tokens count too"


def test_feed_only_and_paused_subscribers_have_their_feed(tmp_path: Path) -> None:
    people = (
        Subscriber("feedonly@example.org", RULES, by_email=False, layout="compact"),
        Subscriber("paused@example.org", RULES, active=False),
    )
    settings = seeded(tmp_path, people)
    with running(settings, Clock()) as client:
        for person in people:
            answer = client.get(url_of(settings, person.email))
            entries = valid_atom(answer.content).entries
            assert answer.status_code == 200 and entries
            assert all(e.content[0].value.count("<p>") >= 4 for e in entries), "facts, why, abstract or line, links"


def test_the_feed_keeps_to_its_cap_and_an_empty_one_is_valid_too(tmp_path: Path) -> None:
    quiet = "bob@example.org"
    people = (Subscriber(ADA, ("the",)), Subscriber(quiet, ("nothingmatchesthis",)))
    settings = seeded(tmp_path, people, real_day(MAX_ENTRIES + 30))
    with running(settings, Clock()) as client:
        full = valid_atom(client.get(url_of(settings, ADA)).content)
        empty = valid_atom(client.get(url_of(settings, quiet)).content)
    assert len(full.entries) == MAX_ENTRIES
    assert empty.entries == [] and empty.feed.updated.startswith("2026-11-20")


def test_the_manage_page_and_the_cli_give_the_same_working_address(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    with running(settings, Clock()) as client:
        page = client.get(f"/manage?token={SIGNER.sign('manage', ADA)}")
        address = url_of(settings, ADA)
        assert page.status_code == 200 and f'value="{address}"' in page.text
        assert client.get(address).status_code == 200
    env = cli_env(settings.data_dir, DIGEST_SECRET_KEY=SECRET)
    printed = run_cli("feed-url", "Ada@Example.org", env=env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == feed_url(SIGNER, env["DIGEST_PUBLIC_URL"], Subscriber(ADA, ()))
    missing = run_cli("feed-url", "nobody@example.org", env=env)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_the_access_log_never_holds_a_feed_address() -> None:
    token = SIGNER.feed_token(Subscriber(ADA, ()))
    line = TokenRedactingFilter.redact(f'127.0.0.1:5 - "GET /feed/{token}.xml HTTP/1.1" 304')
    assert token not in line and "/feed/[redacted]" in line


# -- the address names nobody; a new one retires the old (issue 29 follow-up) ----------------------

TOKEN_SHAPE = re.compile(r"/feed/([A-Za-z0-9_-]{32})\.xml")
JOINED = datetime(2026, 11, 2, 8, 30, tzinfo=UTC)


def shown_feed(page: str) -> str:
    """The feed address a manage page shows."""
    found = re.search(r'id="feed-url" readonly value="([^"]+)"', page)
    assert found is not None
    return htmllib.unescape(found.group(1))


def stored(settings: Settings, email: str) -> Subscriber:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        person = store.subscriber(email)
    assert person is not None
    return person


def manage_post(client: httpx.Client, email: str, action: str, **headers: str) -> httpx.Response:
    token = SIGNER.sign("manage", email)
    page = client.get(f"/manage?token={token}")
    return client.post("/manage", data={"csrf": csrf_of(page.text), "token": token, "action": action}, headers=headers)


def test_the_feed_token_is_a_keyed_hash_of_the_address_its_key_and_its_subscription() -> None:
    ada = Subscriber(ADA, RULES, subscribed_at=JOINED)
    token = SIGNER.feed_token(ada)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert SIGNER.feed_token(replace(ada, email="Ada@Example.org", rules=("x",), hour=7)) == token, "stable"
    others = {
        SIGNER.feed_token(replace(ada, email="bob@example.org")),
        SIGNER.feed_token(replace(ada, feed_key="k2")),
        SIGNER.feed_token(replace(ada, subscribed_at=JOINED + timedelta(days=30))),  # left and came back
        Signer("another-secret").feed_token(ada),
    }
    assert len(others) == 4 and token not in others
    decoded = base64.urlsafe_b64decode(token)
    assert b"ada" not in decoded.lower() and "ada" not in token.lower()


def test_the_feed_address_names_nobody_and_is_the_same_across_restarts(tmp_path: Path) -> None:
    people = (Subscriber(ADA, RULES, subscribed_at=JOINED), Subscriber("bob@example.org", RULES))
    settings = seeded(tmp_path, people)
    addresses = []
    for _ in range(2):  # two processes in turn: the address survives a restart
        with running(settings, Clock()) as client:
            address = shown_feed(client.get(f"/manage?token={SIGNER.sign('manage', ADA)}").text)
            answer = client.get(address)
            assert answer.status_code == 200
            addresses.append(address)
            bob = shown_feed(client.get(f"/manage?token={SIGNER.sign('manage', 'bob@example.org')}").text)
    assert addresses[0] == addresses[1] == feed_url(SIGNER, settings.public_url, people[0])
    token = TOKEN_SHAPE.search(addresses[0])
    assert token is not None and bob != addresses[0]
    for form in (ADA, quote(ADA), base64.urlsafe_b64encode(ADA.encode()).decode().rstrip("=")[:12], "ada"):
        assert form not in addresses[0]
    assert b"ada" not in base64.urlsafe_b64decode(token.group(1)).lower()
    assert ADA.encode() not in answer.content, "nor does the feed itself"


def test_a_new_feed_address_retires_the_old_one_and_only_its_button_makes_one(tmp_path: Path) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES, subscribed_at=JOINED),))
    manage = f"/manage?token={SIGNER.sign('manage', ADA)}"
    with running(settings, Clock()) as client:
        old = shown_feed(client.get(manage).text)
        first = client.get(old)
        assert first.status_code == 200
        # None of these makes a new address: a GET, a forged link, a stale or missing form token, another site.
        assert client.get(manage + "&action=new-feed").status_code == 200
        forged = client.post(
            "/manage", data={"token": Signer("x").sign("manage", ADA), "action": "new-feed", "csrf": "x"}
        )
        no_form_token = client.post("/manage", data={"token": SIGNER.sign("manage", ADA), "action": "new-feed"})
        cross_site = manage_post(client, ADA, "new-feed", **{"sec-fetch-site": "cross-site"})
        assert [r.status_code for r in (forged, no_form_token, cross_site)] == [400, 400, 400]
        assert stored(settings, ADA).feed_key is None and shown_feed(client.get(manage).text) == old

        done = manage_post(client, ADA, "new-feed")
        assert done.status_code == 200 and "Your feed has a new address" in done.text
        new = shown_feed(done.text)
        assert new != old and TOKEN_SHAPE.search(new)
        fresh = client.get(new)  # at once, without waiting for the table to be built again
        assert fresh.status_code == 200 and valid_atom(fresh.content).feed.links[0].href == new
        retired = client.get(old)
        conditional = client.get(old, headers={"If-None-Match": first.headers["etag"]})
        for answer in (retired, conditional):
            assert answer.status_code == 410 and answer.text == "This feed has ended.\n"
        again = manage_post(client, ADA, "new-feed")  # the button again: yet another address
        newest = shown_feed(again.text)
        assert newest not in (old, new) and client.get(new).status_code == 410
    person = stored(settings, ADA)
    assert person.feed_key and feed_url(SIGNER, settings.public_url, person) == newest
    assert person.rules == RULES and person.subscribed_at == JOINED, "nothing else changed"
    with running(settings, Clock()) as client:  # after a restart: the new one works, the old ones are unknown
        assert client.get(newest).status_code == 200
        assert [client.get(a).status_code for a in (old, new)] == [404, 404]
    printed = run_cli("feed-url", ADA, env=cli_env(settings.data_dir, DIGEST_SECRET_KEY=SECRET))
    assert printed.stdout.strip().rsplit("/", 1)[1] == newest.rsplit("/", 1)[1]


def test_guessed_addresses_cost_one_table_rebuild_however_many_come_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    rebuilds: list[int] = []
    real_holders = FeedAddresses._holders

    def counted(self: FeedAddresses) -> dict[str, str]:
        rebuilds.append(1)
        time.sleep(0.05)  # a big store: guesses pile up while the table is built
        return real_holders(self)

    monkeypatch.setattr(FeedAddresses, "_holders", counted)
    guesses = [base64.urlsafe_b64encode(secrets.token_bytes(24)).decode() for _ in range(200)]
    with running(settings, Clock(), WebLimits(feeds_per_ip=1000)) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:  # one client, many connections: the guesses at once
            answers = list(pool.map(lambda t: client.get(f"/feed/{t}.xml"), guesses))
        took = time.monotonic() - started
        assert client.get(url_of(settings, ADA)).status_code == 200
    assert {a.status_code for a in answers} == {404}
    assert ADA not in "".join(a.text for a in answers)
    allowed = 2 + int(took // feed_addresses_module.MISS_REBUILD_SECONDS)  # on a slow machine, one per period
    assert 1 <= len(rebuilds) <= allowed, "the first table, then at most one more per period, however many guesses"


def test_a_subscriber_another_process_adds_is_found_at_the_first_poll(tmp_path: Path) -> None:
    """On TinyDB at the first poll (the store file changed, so the table is rebuilt). PostgreSQL has
    no file to watch: there a miss rebuilds the table at most every ``MISS_REBUILD_SECONDS``, so the
    address is found within that many seconds (what the module promises), not always at once."""
    settings = seeded(tmp_path, (Subscriber(ADA, RULES),))
    bob = Subscriber("bob@example.org", RULES, subscribed_at=JOINED)
    with running(settings, Clock()) as client:
        assert client.get(url_of(settings, ADA)).status_code == 200  # the table is built
        with open_backend(settings.store.url, settings.data_dir) as store:  # as `digest subscribe` would
            store.save_subscriber(bob)
        first = client.get(feed_url(SIGNER, settings.public_url, bob)).status_code
        if not is_postgres(settings.store.url):
            assert first == 200
            return
        assert first in (200, 404)
        time.sleep(feed_addresses_module.MISS_REBUILD_SECONDS + 0.5)
        assert client.get(feed_url(SIGNER, settings.public_url, bob)).status_code == 200


@contextmanager
def replica(settings: Settings) -> Iterator[httpx.Client]:
    """A web front on a PostgreSQL store, its connections closed at the end."""
    app = create_app(settings, clock=Clock(), today=lambda: AS_OF)
    port = int(settings.public_url.rsplit(":", 1)[1])
    try:
        with live_server(app, port) as base, httpx.Client(base_url=base, timeout=30, follow_redirects=True) as client:
            yield client
    finally:
        app.state.front.keeper.close()


def test_on_postgresql_a_replica_finds_a_new_address_made_on_another(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed_addresses_module, "MISS_REBUILD_SECONDS", 0.0)
    papers = seed_items()  # skips without ../shared/seeds: before any connection is open
    store = PostgresStore(postgres_url, data_dir=tmp_path)
    store.upsert_items(papers, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
    store.save_subscriber(Subscriber(ADA, RULES, subscribed_at=JOINED))
    store.close_connection()
    replicas = [
        Settings(
            data_dir=tmp_path / name,
            public_url=make_settings(tmp_path, None).public_url,
            secret_key=SECRET,
            store={"url": postgres_url},
        )
        for name in ("a", "b")
    ]
    with replica(replicas[0]) as first, replica(replicas[1]) as second:
        old = shown_feed(first.get(f"/manage?token={SIGNER.sign('manage', ADA)}").text)
        path = "/feed/" + old.rsplit("/", 1)[1]
        assert second.get(path).status_code == 200
        new = shown_feed(manage_post(first, ADA, "new-feed").text).rsplit("/", 1)[1]
        assert second.get(f"/feed/{new}").status_code == 200, "the other replica builds its table again"
        assert second.get(path).status_code == 410 and first.get(path).status_code == 410
