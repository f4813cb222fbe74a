"""Settings for arXiv and feeds, and how each source is named in the email."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from digest.clock import utc_now
from digest.errors import SettingsError
from digest.mail.render import Links, render_digest
from digest.models import Digest, DigestEntry, Highlight, Item, RuleMatch, Subscriber
from digest.settings import load_settings
from digest.sources.arxiv import ArxivSource
from digest.sources.feed import FeedSource
from digest.sources.hf_papers import HfPapersSource
from digest.sources.registry import configured_sources

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "digest.example.toml"


def test_defaults_leave_only_hugging_face_on() -> None:
    settings = load_settings()
    assert settings.sources.arxiv.enabled is False
    assert settings.sources.arxiv.base_url == "https://rss.arxiv.org"
    assert settings.sources.arxiv.categories == ["cs.CV", "cs.LG"]
    assert settings.sources.arxiv.min_interval_seconds == 3
    assert settings.sources.feeds == []
    assert [type(s) for s in configured_sources(settings.sources, None, utc_now)] == [HfPapersSource]


def test_the_example_feed_block_works_once_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    block = re.search(r"^# \[\[sources\.feeds\]\]\n(?:# .*\n)+", text, re.MULTILINE)
    assert block is not None
    enabled = text.replace(block.group(0), re.sub(r"^# ", "", block.group(0), flags=re.MULTILINE))
    enabled = enabled.replace("[sources.arxiv]\n", "[sources.arxiv]\nenabled = true\n", 1).replace(
        "enabled = false\n", "", 1
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "digest.toml").write_text(enabled)
    settings = load_settings()
    assert [(f.name, f.url) for f in settings.sources.feeds] == [("deals", "https://market.example/search.rss?q=4090")]
    sources = configured_sources(settings.sources, None, utc_now)
    assert [type(s) for s in sources] == [HfPapersSource, ArxivSource, FeedSource]
    assert [s.name for s in sources] == ["hf_papers", "arxiv", "deals"]


def test_environment_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SOURCES__ARXIV__CATEGORIES", "cs.CV+stat.ML, astro-ph.CO")
    monkeypatch.setenv("DIGEST_SOURCES__FEEDS", json.dumps([{"name": "blog", "url": "https://blog.example/feed/"}]))
    settings = load_settings()
    assert settings.sources.arxiv.categories == ["cs.CV", "stat.ML", "astro-ph.CO"]
    assert settings.sources.feeds[0].url == "https://blog.example/feed/"
    monkeypatch.setenv("DIGEST_SOURCES__ARXIV__CATEGORIES", '["math.AG"]')
    assert load_settings().sources.arxiv.categories == ["math.AG"]


@pytest.mark.parametrize(
    ("variable", "value", "named", "says"),
    [
        (
            "DIGEST_SOURCES__ARXIV__CATEGORIES",
            "cs.CV+not a category!",
            "sources.arxiv.categories",
            "'category!' is not",
        ),
        ("DIGEST_SOURCES__ARXIV__CATEGORIES", "", "sources.arxiv.categories", "at least one"),
        ("DIGEST_SOURCES__ARXIV__BASE_URL", "rss.arxiv.org", "sources.arxiv.base_url", "http"),
        ("DIGEST_SOURCES__ARXIV__MIN_INTERVAL_SECONDS", "1", "sources.arxiv", "at least 3 for rss.arxiv.org"),
        ("DIGEST_SOURCES__FEEDS", '[{"name": "Deals!", "url": "https://x.example/"}]', "sources.feeds.0.name", "lower"),
        ("DIGEST_SOURCES__FEEDS", '[{"name": "x", "url": "ftp://x.example/"}]', "sources.feeds.0.url", "http"),
        ("DIGEST_SOURCES__FEEDS", '[{"name": "x"}]', "sources.feeds.0.url", "Field required"),
        ("DIGEST_SOURCES__FEEDS", '[{"name": "arxiv", "url": "https://x.example/"}]', "sources.feeds", "'arxiv'"),
        (
            "DIGEST_SOURCES__FEEDS",
            '[{"name": "x", "url": "https://x.example/", "urll": 1}]',
            "sources.feeds.0.urll",
            "",
        ),
        ("DIGEST_SOURCES__FEEDS", '[{"name": "x", "url": ', "DIGEST_SOURCES__FEEDS", "must be JSON"),
    ],
)
def test_a_wrong_source_setting_names_its_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value) and says in str(caught.value)


def test_two_feeds_with_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    twice = [{"name": "blog", "url": "https://a.example/"}, {"name": "blog", "url": "https://b.example/"}]
    monkeypatch.setenv("DIGEST_SOURCES__FEEDS", json.dumps(twice))
    with pytest.raises(SettingsError, match="'blog' is used twice"):
        load_settings()


def test_the_email_names_each_source() -> None:
    def item(source: str, **fields: object) -> DigestEntry:
        paper = Item(
            id=f"{source}:1",
            source=source,
            title=f"4090 from {source}",
            abstract="",
            url="https://x.example/",
            listed_on=date(2026, 11, 20),
            **fields,  # type: ignore[arg-type]
        )
        return DigestEntry(paper, (RuleMatch("4090", (Highlight("title", 0, 4),)),))

    entries = [
        item("hf_papers", upvotes=0),
        item("arxiv", categories=("cs.CV", "cs.LG", "cs.AI", "cs.RO")),
        item("deals"),
    ]
    digest = Digest(Subscriber("a@example.org", ("4090",)), entries, date(2026, 11, 20), "d1")
    rendered = render_digest(digest, Links("https://v", "https://m", "https://u"))
    facts = [line.strip() for line in rendered.text.splitlines() if line.strip().startswith("Nov 20, 2026")]
    assert facts == [
        "Nov 20, 2026 · Hugging Face",  # no "▲ 0 upvotes": noise
        "Nov 20, 2026 · arXiv · cs.CV, cs.LG, cs.AI",
        "Nov 20, 2026 · deals",
    ]
    assert "Nov 20, 2026 &#183; arXiv &#183; cs.CV, cs.LG, cs.AI" in rendered.html  # "·", as the HTML writes it
