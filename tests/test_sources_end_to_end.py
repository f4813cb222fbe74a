"""``digest run`` with Hugging Face, arXiv and three feeds, against real local servers and aiosmtpd.

The paper both Hugging Face and arXiv list reaches its subscriber once, with upvotes and the code
link from one and categories from the other; a broken feed fails alone; HTML from a feed never
reaches the email as markup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, pass_store, run_cli
from tests.feed_server import FeedServer, Route, arxiv_rss, fixture
from tests.servers import FakeHfApi, SmtpSink

DAY1, DAY2, DAY3 = "2026-11-19", "2026-11-20", "2026-11-21"
ARXIV_PATH = "/rss/cs.CV+cs.LG"
SHARED = "2611.23289"
ROLLING = "Rolling Forcing: Autoregressive Long Video Diffusion in Real Time"


def hf_entry(paper_id: str, title: str, summary: str, day: str, upvotes: int) -> dict[str, Any]:
    return {
        "paper": {
            "id": paper_id,
            "title": title,
            "summary": summary,
            "authors": [{"name": "Kunhao Liu"}, {"name": "Wenbo Hu"}],
            "publishedAt": f"{day}T17:59:59.000Z",
            "submittedOnDailyAt": f"{day}T03:00:00.000Z",
            "upvotes": upvotes,
            "githubRepo": "https://github.com/example/rolling-forcing",
        },
        "numComments": 1,
    }


ARXIV_ENTRIES: list[dict[str, str | list[str]]] = [
    {
        "id": f"{SHARED}v1",
        "title": ROLLING,
        "abstract": "Streaming video generation aims at long video streams with low latency.",
        "type": "new",
        "authors": ["Kunhao Liu", "Wenbo Hu"],
        "categories": ["cs.CV", "cs.LG"],
    },
    {
        "id": "2611.30001v1",
        "title": "Significance Tests for Gaussian Splatting Benchmarks",
        "abstract": "We test whether reported gains hold at $p<0.05$.",
        "type": "cross",
        "authors": ["Ada Lovelace"],
        "categories": ["stat.ML", "cs.CV"],
    },
    {
        "id": "2609.11111v3",
        "title": "An Older Paper on Video Diffusion, Revised",
        "abstract": "Revised experiments.",
        "type": "replace",
        "authors": ["Grace Hopper"],
        "categories": ["cs.CV"],
    },
]


@pytest.fixture
def world(smtp: SmtpSink, tmp_path: Path) -> Iterator[dict[str, Any]]:
    summary = "Streaming video generation, as one fundamental component\nof interactive world models."
    hf = FakeHfApi(days={DAY1: [], DAY2: [hf_entry(SHARED, ROLLING, summary, DAY2, 7)]}).start()
    feeds = FeedServer().start()
    feeds.routes[ARXIV_PATH] = Route(arxiv_rss("Fri, 20 Nov 2026 00:00:00 -0500", ARXIV_ENTRIES), etag='"a1"')
    feeds.routes["/deals.xml"] = Route(fixture("rss2_html.xml"))
    feeds.routes["/feed.json"] = Route(fixture("feed.json"), "application/feed+json")
    feeds.routes["/broken.xml"] = Route(fixture("malformed.xml"))
    feed_list = [
        {"name": "deals", "url": feeds.url("/deals.xml")},
        {"name": "releases", "url": feeds.url("/feed.json")},
        {"name": "broken", "url": feeds.url("/broken.xml")},
    ]
    env = cli_env(
        tmp_path / "data",
        hf,
        smtp,
        DIGEST_SOURCES__ARXIV__ENABLED="true",
        DIGEST_SOURCES__ARXIV__BASE_URL=feeds.base_url,
        DIGEST_SOURCES__ARXIV__CATEGORIES="cs.CV+cs.LG",
        DIGEST_SOURCES__ARXIV__MIN_INTERVAL_SECONDS="0.2",
        DIGEST_SOURCES__FEEDS=json.dumps(feed_list),
    )
    for address, rule in [
        ("alice@example.org", "video diffusion"),
        ("bob@example.org", "4090"),
        ("carol@example.org", "gaussian splatting"),
    ]:
        result = run_cli("subscribe", address, "-k", rule, env=env)
        assert result.returncode == 0, result.stderr
    yield {"env": env, "hf": hf, "feeds": feeds, "smtp": smtp, "data": tmp_path / "data"}
    hf.stop()
    feeds.stop()


def text_of(message: Any) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())


def html_of(message: Any) -> str:
    return str(message.get_body(preferencelist=("html",)).get_content())


def test_one_paper_from_two_sources_is_delivered_once_and_a_broken_feed_fails_alone(world: dict[str, Any]) -> None:
    env, smtp, feeds = world["env"], world["smtp"], world["feeds"]

    first = run_cli("run", "--date", DAY2, env=env)
    assert first.returncode == 1, first.stderr  # one source failed: the cycle says so, and goes on
    assert "source down: broken" in first.stdout
    assert f"feed broken ({feeds.url('/broken.xml')}): malformed feed, cut short or broken" in first.stderr
    assert "sent 3" in first.stdout

    (alice,) = smtp.to("alice@example.org")
    text = text_of(alice)
    assert text.count(ROLLING) == 1  # Hugging Face and arXiv listed it: one entry
    assert f"/papers/{SHARED}" in text  # Hugging Face's page wins the link
    assert "▲ 7 upvotes" in text and "Code: https://github.com/example/rolling-forcing" in text
    assert "cs.CV, cs.LG" in text and "Hugging Face" in text
    assert "Older Paper" not in text  # a replacement, not asked for

    (carol,) = smtp.to("carol@example.org")
    assert "Significance Tests for Gaussian Splatting Benchmarks" in text_of(carol)
    assert "arXiv" in text_of(carol) and "https://arxiv.org/abs/2611.30001" in text_of(carol)
    assert "▲" not in text_of(carol)  # arXiv has no upvotes to show

    (bob,) = smtp.to("bob@example.org")
    bob_html, bob_text = html_of(bob), text_of(bob)
    for title in [
        "RTX 4090 Founders Edition, barely used",
        "Two 4090D cards bundle",
        "v2.0: CUDA kernels for the 4090",
    ]:
        assert title in bob_text
    assert "Great card &amp; original box." in bob_html
    for hostile in ["<script", "alert(", "onerror", "javascript:", "<iframe", "<b>bundle"]:
        assert hostile not in bob_html and hostile not in bob_text
    assert "deals" in bob_text and "releases" in bob_text

    # The feed is repaired; the next run delivers nothing twice and arXiv answers 304.
    feeds.routes["/broken.xml"] = Route(fixture("rss091.xml"))
    sent_before = len(smtp.messages)
    second = run_cli("run", "--date", DAY2, env=env)
    assert second.returncode == 0, second.stderr
    assert feeds.to(ARXIV_PATH)[-1].headers["if-none-match"] == '"a1"'
    new_messages = smtp.messages[sent_before:]
    assert [m["To"].addresses[0].addr_spec for m in new_messages] == ["bob@example.org"]
    assert "4090 prices fall" in text_of(new_messages[0]) and "Founders Edition" not in text_of(new_messages[0])


def test_a_paper_listed_again_later_keeps_what_each_source_said(world: dict[str, Any]) -> None:
    env, smtp, hf = world["env"], world["smtp"], world["hf"]
    assert run_cli("run", "--date", DAY2, env=env).returncode == 1  # the broken feed
    summary = "Streaming video generation, as one fundamental component of interactive world models."
    hf.days[DAY3] = [hf_entry(SHARED, ROLLING, summary, DAY3, 19)]  # Hugging Face lists it again, more upvotes
    world["feeds"].routes[ARXIV_PATH] = Route(arxiv_rss("Sat, 21 Nov 2026 00:00:00 -0500", []), etag='"a2"')
    before = len(smtp.to("alice@example.org"))
    assert run_cli("run", "--date", DAY3, env=env).returncode == 1
    assert len(smtp.to("alice@example.org")) == before == 1

    with pass_store(world["data"], write=False) as store:
        record = store.item(SHARED)
        assert record is not None
        assert [i.id for i in store.items_listed_between(date(2026, 11, 1), date(2026, 11, 30))].count(SHARED) == 1
    assert record.categories == ("cs.CV", "cs.LG")  # from arXiv, two days ago
    assert record.upvotes == 19  # from Hugging Face, today
    assert record.listed_on == date.fromisoformat(DAY2)
    assert re.fullmatch(r"[0-9]{4}\.[0-9]{5}", record.id)
