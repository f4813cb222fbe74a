"""The second review of the web front (issues 29/30): the sign-up mail limit shared by web replicas
on PostgreSQL, the vote page handing out no manage rights, only canonical time zones, and vote
links that work for a feed's long paper ids.

Each test talks to the real app (uvicorn on 127.0.0.1, ``tests/web_support.py``), real ``digest
web`` processes on a real PostgreSQL (``tests/postgres_server.py``) or a real ``digest run``."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from digest.cycle.links import digest_links
from digest.errors import SubscriberError, TokenError
from digest.mail.mime import seven_bit_html
from digest.mail.render import render_digest
from digest.mail.votes import MAX_VOTE_PAPER_CHARS
from digest.models import Digest, Item, Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.postgres.limits import claim_mail, release_mail
from digest.state.postgres.store import PostgresStore
from digest.state.preferences import Preferences, known_zone, parse_timezone
from tests.conftest import cli_env, pass_store, run_cli
from tests.email_fixtures import digest_for
from tests.feed_server import FeedServer, Route
from tests.postgres_server import PostgresServer, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import FakeHfApi, SmtpSink
from tests.test_roles_postgres import replicas  # noqa: F401 (two `digest web` processes on one database)
from tests.web_support import SECRET, Clock, csrf_of, make_settings, running, sample_items, text_of

ADA = "ada@example.org"
SIGNED = re.compile(r"[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{8,}")  # itsdangerous: payload.time.sig


# -- 4. one confirmation mail per mailbox per hour, however many web replicas ------------------------
def test_sign_ups_spread_over_two_web_replicas_send_one_mail(
    replicas: list[str],  # noqa: F811
    smtp: SmtpSink,
    postgres_url: str,  # noqa: F811
) -> None:
    """Six sign-ups for one mailbox at once, three to each replica (spelled three ways): one mail."""
    spellings = ["ada@example.org", "Ada@Example.org", "ada+digest@example.org"]

    def sign_up(n: int) -> int:
        with httpx.Client(base_url=replicas[n % 2], timeout=30, follow_redirects=True) as browser:
            form = {"csrf": csrf_of(browser.get("/").text), "email": spellings[n % 3], "rules": "diffusion"}
            answer = browser.post("/subscribe", data=form)
            assert "Check your inbox" in answer.text
            return answer.status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(sign_up, range(6))) == [200] * 6
    mailed = [m for m in smtp.messages if "example.org" in str(m["To"]).lower()]
    assert len(mailed) == 1, [m["To"] for m in mailed]
    store = PostgresStore(postgres_url)
    rows = store.connection.execute("SELECT key, cardinality(sent) FROM signup_mails").fetchall()
    store.close_connection()
    assert len(rows) == 1 and rows[0][1] == 1
    assert re.fullmatch(r"[0-9a-f]{32}", rows[0][0]), "a keyed hash, never the address"


def test_the_shared_claim_is_atomic_windowed_and_taken_back_when_sending_failed(
    postgres_url: str,  # noqa: F811
) -> None:
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    stores = [PostgresStore(postgres_url) for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def claim(store: PostgresStore) -> bool:
        barrier.wait()
        return claim_mail(store, "k1", at, 3600, 1)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            assert sorted(pool.map(claim, stores)) == [False] * 7 + [True], "eight replicas at once: one mail"
        first = stores[0]
        assert not claim_mail(first, "k1", at + timedelta(minutes=59), 3600, 1)
        assert claim_mail(first, "k2", at, 3600, 1), "another mailbox has its own mail"
        release_mail(first, "k2")  # its sending failed
        assert claim_mail(first, "k2", at + timedelta(seconds=1), 3600, 1)
        assert claim_mail(first, "k1", at + timedelta(hours=1, seconds=1), 3600, 1), "a new window"
        assert claim_mail(first, "k3", at, 3600, 2) and claim_mail(first, "k3", at, 3600, 2)
        assert not claim_mail(first, "k3", at, 3600, 2)
        later = at + timedelta(days=1)
        assert claim_mail(first, "k4", later, 3600, 1)
        keys = {row[0] for row in first.connection.execute("SELECT key FROM signup_mails").fetchall()}
        assert keys == {"k4"}, "rows whose mails all expired are deleted by a later claim"
    finally:
        for store in stores:
            store.close_connection()


# -- 5. the page after a vote hands out no manage rights ---------------------------------------------
@pytest.fixture
def site(tmp_path: Path, sample_days: dict[str, list[dict[str, Any]]]) -> tuple[Settings, list[Item]]:
    items = sample_items(sample_days)
    data_dir = tmp_path / "data"
    with pass_store(data_dir) as store:
        store.upsert_items(items, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
        store.save_subscriber(Subscriber(ADA, ("real-time", "4090"), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    return make_settings(data_dir, None), items


def press(client: httpx.Client, link: str) -> httpx.Response:
    page = client.get(link)
    assert page.status_code == 200, page.text
    token = parse_qs(urlsplit(link).query)["token"][0]
    return client.post("/vote", data={"csrf": csrf_of(page.text), "token": token})


def test_the_voted_page_holds_no_manage_token(site: tuple[Settings, list[Item]]) -> None:
    settings, items = site
    paper = next(item.id for item in items if item.title.startswith("Live Avatar"))
    signer = Signer(SECRET)
    with running(settings, Clock()) as client:
        done = press(client, "/vote?token=" + signer.sign("vote", ADA, p=paper, v=-1))
    assert done.status_code == 200 and "Noted: not for me" in done.text
    with pass_store(settings.data_dir, write=False) as store:
        assert store.votes(ADA) == {paper: -1}
    assert "/manage" not in done.text
    for token in SIGNED.findall(done.text):
        with pytest.raises(TokenError):
            signer.verify("manage", token)
    assert "“Manage your rules” link at the end of your latest digest" in " ".join(done.text.split())


# -- 6. canonical time zone names only ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["posix/Europe/Berlin", "right/UTC", "localtime", "posixrules", "Factory"])
def test_a_zone_that_is_no_ones_zone_is_refused(name: str) -> None:
    assert not known_zone(name)
    with pytest.raises(SubscriberError, match="not a known time zone"):
        parse_timezone(name)
    with pytest.raises(SubscriberError, match="timezone"):
        Preferences(timezone=name, hour=7)
    stored = Subscriber(ADA, ("gpu",), timezone=name, hour=7)
    assert Preferences.of(stored).timezone is None, "one stored before is read as the service's zone"


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC", "Etc/GMT+5"])
def test_canonical_zones_are_accepted(name: str) -> None:
    assert known_zone(name) and parse_timezone(f" {name} ") == name
    assert Preferences(timezone=name, hour=7).timezone == name


def test_a_refused_zone_is_refused_on_the_manage_page_too(site: tuple[Settings, list[Item]]) -> None:
    settings, _ = site
    manage = "/manage?token=" + Signer(SECRET).sign("manage", ADA)
    with running(settings, Clock()) as client:
        page = client.get(manage)
        form = {
            "csrf": csrf_of(page.text),
            "token": parse_qs(urlsplit(manage).query)["token"][0],
            "action": "save",
            "rules": "real-time\n4090",
            "hour": "7",
            "timezone": "right/UTC",
        }
        answer = client.post("/manage", data=form)
    assert answer.status_code == 400 and "not a known time zone" in answer.text
    with pass_store(settings.data_dir, write=False) as store:
        assert store.subscriber(ADA).timezone is None  # type: ignore[union-attr]


# -- 7. vote links for a feed's long paper ids ----------------------------------------------------------
LONG_GUID = "https://blog.example.org/2026/11/20/" + "-".join(["zanzibarquux-notes-on-streaming"] * 10)
LONG_GUID = LONG_GUID[: 300 - len("blog:")]


def rss(guid: str) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Blog</title><link>https://blog.example.org/</link>
<item><title>Zanzibarquux: streaming notes</title><guid isPermaLink="false">{guid}</guid>
<link>{guid}</link><description>Notes on zanzibarquux streaming.</description></item>
</channel></rss>""".encode()


@pytest.fixture
def blog() -> Iterator[FeedServer]:
    feeds = FeedServer().start()
    feeds.routes["/blog.xml"] = Route(rss(LONG_GUID))
    yield feeds
    feeds.stop()


def test_a_feed_papers_300_character_id_gets_vote_links_that_record_the_vote(
    hf_api: FakeHfApi, smtp: SmtpSink, blog: FeedServer, tmp_path: Path
) -> None:
    """``digest run`` mails the feed paper's links; the web front shows the page and records the press."""
    data_dir = tmp_path / "data"
    feeds = f'[{{"name": "blog", "url": "{blog.url("/blog.xml")}"}}]'
    env = {**cli_env(data_dir, hf_api, smtp), "DIGEST_SECRET_KEY": SECRET, "DIGEST_SOURCES__FEEDS": feeds}
    assert run_cli("subscribe", ADA, "-k", "zanzibarquux", env=env).returncode == 0
    ran = run_cli("run", "--date", "2026-11-20", env=env)
    assert ran.returncode == 0, ran.stderr
    text = text_of(smtp.to(ADA)[-1])
    [link] = re.findall(r"Not for me: https://digest\.example\.org(/vote\?token=\S+)", text)
    paper = parse_qs(urlsplit(link).query)["p"][0]
    assert paper == "blog:" + LONG_GUID and len(paper) == 300
    with running(make_settings(data_dir, None), Clock()) as client:
        page = client.get(link)
        assert page.status_code == 200 and "Zanzibarquux" in page.text
        query = {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}
        done = client.post("/vote", data={**query, "csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "Noted: not for me" in done.text
    with pass_store(data_dir, write=False) as store:
        assert store.votes(ADA) == {paper: -1}


def feed_digest(*ids: str) -> Digest:
    day = date(2026, 11, 20)
    items = [Item(i, "blog", f"Zanzibarquux {n}", "", "https://blog.example.org/", day) for n, i in enumerate(ids)]
    return digest_for(items, ("zanzibarquux",), email=ADA)


def test_an_id_too_long_for_a_link_gets_no_vote_links_and_a_300_character_one_keeps_the_email_7_bit() -> None:
    too_long = "blog:" + "x" * MAX_VOTE_PAPER_CHARS
    digest = feed_digest("blog:" + LONG_GUID, too_long, "blog:short")
    rendered = render_digest(digest, digest_links(Signer(SECRET), "https://digest.example.org", digest))
    assert rendered.html.count(">Not for me<") == 2 and rendered.text.count("Not for me: ") == 2
    voted = [parse_qs(urlsplit(url).query)["p"][0] for url in re.findall(r"https://\S+/vote\?\S+", rendered.text)]
    assert too_long not in voted and "blog:" + LONG_GUID in voted
    digest = feed_digest("blog:" + LONG_GUID, "blog:short")
    rendered = render_digest(digest, digest_links(Signer(SECRET), "https://digest.example.org", digest))
    assert rendered.html.count(">Not for me<") == 2
    assert seven_bit_html(rendered.html_bytes()) is not None, "no line past 998 octets: not sent as base64"
