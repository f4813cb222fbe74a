"""Pure parts of the sources: arXiv and feed parsing, identities, HTML to text, merging, the gate."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from digest.errors import FeedFormatError
from digest.models import Item
from digest.settings import FeedSettings, SourcesSettings
from digest.sources import arxiv, feed
from digest.sources.arxiv import RequestSpacer, bare_id
from digest.sources.conditional import FRESHNESS_CAP, fresh_until, max_age, validators
from digest.sources.feed import identity
from digest.sources.markup import html_to_text, web_url
from digest.sources.merge import combine, merge_items, with_stored
from digest.sources.registry import enabled
from tests.feed_server import arxiv_rss, fixture

DAY = date(2026, 11, 20)


# -- arXiv ----------------------------------------------------------------------------------------
def test_arxiv_keeps_new_and_cross_and_skips_replacements() -> None:
    items, warnings = arxiv.parse(fixture("arxiv_cs.xml"))
    assert warnings == []
    assert [i.id for i in items] == ["2611.23289", "2611.30001"]
    new, cross = items
    assert new.title == "Rolling Forcing: Autoregressive Long Video Diffusion in Real Time"
    assert new.authors == ("Kunhao Liu", "Wenbo Hu", "Jiale Xu", "Ying Shan", "Shijian Lu")
    assert new.categories == ("cs.CV", "cs.LG")
    assert new.url == "https://arxiv.org/abs/2611.23289"
    assert new.source == "arxiv"
    assert new.listed_on == DAY  # the announcement date, midnight US Eastern
    assert new.abstract.startswith("Streaming video generation, as one fundamental component")
    assert "Announce Type" not in new.abstract and "\n" not in new.abstract
    assert cross.categories == ("stat.ML", "cs.CV")
    # arXiv abstracts are text (TeX included), not HTML: nothing after a "<" may vanish.
    assert (
        cross.abstract == "We test whether reported gains hold at $p<0.05$ when a<b and c>d across 12 scenes & 3 seeds."
    )


def test_arxiv_replacements_when_asked_for() -> None:
    items, _ = arxiv.parse(fixture("arxiv_cs.xml"), include_replacements=True)
    assert [i.id for i in items] == ["2611.23289", "2611.30001", "2609.11111", "2608.22222"]  # versions dropped


def test_arxiv_weekend_feed_is_empty_not_an_error() -> None:
    assert arxiv.parse(fixture("arxiv_weekend.xml")) == ([], [])


def test_arxiv_garbage_is_an_error_that_says_so() -> None:
    with pytest.raises(FeedFormatError, match="not an RSS, Atom or JSON feed"):
        arxiv.parse(b"<html><body>Service temporarily unavailable</body></html>")
    with pytest.raises(FeedFormatError, match="cut short or broken"):
        arxiv.parse(fixture("arxiv_cs.xml")[:1500])


def test_arxiv_atom_twin_and_other_namespace_prefix() -> None:
    atom = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:paper="http://arxiv.org/schemas/atom"
      xmlns:dc="http://purl.org/dc/elements/1.1/">
  <title>cs.CR updates on arXiv.org</title><id>urn:x</id><updated>2026-08-20T04:00:09Z</updated>
  <entry>
    <id>oai:arXiv.org:2608.18187v1</id><title>A TCP Protocol Security Study</title>
    <summary>arXiv:2608.18187v1 Announce Type: new Abstract: A network result.</summary>
    <published>2026-08-20T00:00:00-04:00</published>
    <link href="https://arxiv.org/abs/2608.18187" rel="alternate"/>
    <category term="cs.CR"/><paper:announce_type>new</paper:announce_type>
    <dc:creator>Ada Lovelace, Alan Turing</dc:creator>
  </entry>
  <entry>
    <id>oai:arXiv.org:2608.11111v2</id><title>A replacement</title>
    <summary>arXiv:2608.11111v2 Announce Type: replace Abstract: Updated.</summary>
    <published>2026-08-20T00:00:00-04:00</published>
  </entry>
</feed>"""
    items, _ = arxiv.parse(atom)
    (paper,) = items
    assert (paper.id, paper.abstract, paper.listed_on) == ("2608.18187", "A network result.", date(2026, 8, 20))
    assert paper.authors == ("Ada Lovelace", "Alan Turing") and paper.categories == ("cs.CR",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oai:arXiv.org:2411.01234v2", "2411.01234"),
        ("https://arxiv.org/abs/2411.01234", "2411.01234"),
        ("arXiv:0704.0001v1 Announce Type: new", "0704.0001"),
        ("oai:arXiv.org:math.AG/0601001v1", "math.AG/0601001"),
        ("http://arxiv.org/abs/hep-th/9901001v3", "hep-th/9901001"),
        ("no id here", None),
    ],
)
def test_bare_arxiv_ids(text: str, expected: str | None) -> None:
    assert bare_id(text) == expected


def test_arxiv_entry_without_an_id_is_skipped_with_a_warning() -> None:
    payload = arxiv_rss("Fri, 20 Nov 2026 00:00:00 -0500", []).replace(
        b"  </channel>", b"<item><title>Lost</title><description>No id.</description></item></channel>"
    )
    items, warnings = arxiv.parse(payload)
    assert items == [] and warnings == ["entry 1: skipped (no arXiv id in guid, link or description)"]


# -- generic feeds --------------------------------------------------------------------------------
def test_atom_feed() -> None:
    parsed = feed.parse(fixture("atom.xml"), "gpu-notes", DAY, "application/atom+xml")
    assert parsed.warnings == []
    first, second = parsed.items
    assert first.id == "gpu-notes:tag:gpu-notes.example,2026:undervolt"
    assert first.title == "Undervolting the RTX 4090"  # type="html" title: markup removed
    assert first.abstract == "We cut power by 30% and kept real-time rates."  # content beats summary
    assert first.authors == ("Ann Example", "Ben Example")
    assert first.categories == ("hardware",)
    assert first.url == "https://gpu-notes.example/2026/undervolt"
    assert first.listed_on == DAY and first.source == "gpu-notes"
    assert first.published_at == datetime(2026, 11, 19, 8, tzinfo=UTC)
    assert second.id == "gpu-notes:https://gpu-notes.example/2026/no-id"  # no id: the link
    assert second.abstract == "Plain text <not a tag> stays."  # type="text" is text, kept verbatim


def test_rss2_with_html_is_reduced_to_text_and_bad_links_dropped() -> None:
    parsed = feed.parse(fixture("rss2_html.xml"), "deals", DAY)
    assert parsed.ttl_minutes == 60
    listing, bundle, untitled = parsed.items
    assert listing.id == "deals:listing-101"
    assert listing.abstract == "Great card & original box."
    assert listing.categories == ("GPUs",)
    assert bundle.url == "https://market.example/search?q=4090"  # javascript: link replaced by the feed's site
    assert bundle.abstract == "Bundle of two cards"
    assert bundle.title == "Two 4090D cards bundle"  # feedparser sees the markup in the title; text only kept
    assert untitled.id.startswith("deals:sha256:") and untitled.title.startswith("No title, no link, no guid")
    for item in parsed.items:
        assert "script" not in item.abstract and "alert" not in item.abstract and "iframe" not in item.abstract


def test_hash_identity_is_stable_and_namespaced() -> None:
    once = feed.parse(fixture("rss2_html.xml"), "deals", DAY).items[2].id
    again = feed.parse(fixture("rss2_html.xml"), "deals", DAY + timedelta(days=1)).items[2].id
    other = feed.parse(fixture("rss2_html.xml"), "other", DAY).items[2].id
    assert once == again and other != once and other.startswith("other:sha256:")
    assert identity("x", None, None, "", "") is None


def test_json_feed() -> None:
    parsed = feed.parse(fixture("feed.json"), "releases", DAY, "application/feed+json")
    assert parsed.warnings == []
    new, old = parsed.items
    assert new.id == "releases:https://releases.example/v2.0"
    assert new.abstract == "Faster attention & video diffusion samplers."
    assert new.authors == ("Release Bot",) and new.categories == ("release", "cuda")
    assert new.published_at == datetime(2026, 11, 20, 6, tzinfo=UTC)
    assert old.id == "releases:1999" and old.abstract == "Bug fixes. More bug fixes."
    assert old.authors == ("Old Style Author",)  # JSON Feed 1.0's single author
    assert old.url == "https://releases.example/"


def test_json_that_is_not_a_json_feed() -> None:
    with pytest.raises(FeedFormatError, match="JSON Feed version"):
        feed.parse(json.dumps({"items": []}).encode(), "x", DAY, "application/json")
    with pytest.raises(FeedFormatError, match="does not parse"):
        feed.parse(b"{oops", "x", DAY, "application/json")


@pytest.mark.parametrize(
    ("name", "title"), [("rss1.xml", "Gaussian splatting in RSS 1.0"), ("rss091.xml", "4090 prices fall")]
)
def test_rss_1_0_and_0_91(name: str, title: str) -> None:
    (item,) = feed.parse(fixture(name), "old", DAY).items
    assert item.title == title and item.url.startswith("https://")


def test_malformed_feeds() -> None:
    with pytest.raises(FeedFormatError, match="cut short or broken"):
        feed.parse(fixture("malformed.xml"), "broken", DAY)
    with pytest.raises(FeedFormatError, match="not an RSS, Atom or JSON feed"):
        feed.parse(b"<!doctype html><title>502 Bad Gateway</title>", "broken", DAY, "text/html")
    # Complete but not well-formed (an HTML entity XML does not know): read, with a warning.
    sloppy = fixture("rss091.xml").replace(b"Prices fell.", b"Prices&nbsp;fell &copy; news.")
    parsed = feed.parse(sloppy, "sloppy", DAY)
    assert [i.title for i in parsed.items] == ["4090 prices fall"]
    assert len(parsed.warnings) == 1 and parsed.warnings[0].startswith("malformed feed (")


def test_an_empty_feed_is_fine() -> None:
    empty = b'<?xml version="1.0"?><rss version="2.0"><channel><title>quiet</title></channel></rss>'
    assert feed.parse(empty, "quiet", DAY).items == []


def test_html_to_text() -> None:
    assert html_to_text("<p>a</p><p>b<br>c</p>") == "a b c"
    assert html_to_text("x <script>alert(1)</script><style>p{}</style>y") == "x y"
    assert html_to_text("&lt;b&gt; &amp;amp; &eacute;") == "<b> &amp; é"
    assert html_to_text("<a href='javascript:x' onclick='y'>link</a>") == "link"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("https://x.example/a?b=1", True),
        ("http://x.example", True),
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("//x.example/a", False),
        ("https://x.example/a b", False),
        (None, False),
    ],
)
def test_web_url(value: str | None, kept: bool) -> None:
    assert (web_url(value) is not None) is kept


# -- conditional GET helpers ----------------------------------------------------------------------
def test_freshness_hints() -> None:
    now = datetime(2026, 11, 20, 7, tzinfo=UTC)
    assert max_age("public, max-age=600") == 600
    assert max_age("no-cache, max-age=600") == 0 and max_age(None) is None
    assert fresh_until(now, 600, None) == now + timedelta(minutes=10)
    assert fresh_until(now, 60, 30) == now + timedelta(minutes=30)  # the longer hint
    assert fresh_until(now, 7 * 86400, None) == now + FRESHNESS_CAP  # never past the next daily run
    assert fresh_until(now, None, None) is None and fresh_until(now, 0, 0) is None
    assert validators({"etag": '"v1"', "last_modified": "Fri, 20 Nov 2026 05:00:00 GMT"}) == {
        "If-None-Match": '"v1"',
        "If-Modified-Since": "Fri, 20 Nov 2026 05:00:00 GMT",
    }


# -- the politeness gate --------------------------------------------------------------------------
def test_gate_spaces_requests_from_the_end_of_the_last_one() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    gate = RequestSpacer(clock=lambda: clock[0], sleep=sleep)
    with gate.turn(3.0):
        clock[0] += 0.5  # the first request takes half a second
    with gate.turn(3.0):
        pass
    clock[0] += 10
    with gate.turn(3.0):
        pass
    assert slept == [3.0]


# -- merging --------------------------------------------------------------------------------------
def paper(source: str, **fields: object) -> Item:
    base: dict[str, object] = {
        "id": "2611.23289",
        "source": source,
        "title": "Rolling Forcing",
        "abstract": "Streaming video generation.",
        "url": f"https://{source}.example/2611.23289",
        "listed_on": DAY,
    }
    base.update(fields)
    return Item(**base)  # type: ignore[arg-type]


def test_hf_and_arxiv_become_one_item_with_the_best_of_each() -> None:
    hf = paper("hf_papers", upvotes=12, comments=2, github_repo="https://github.com/x/y", listed_on=DAY)
    ax = paper("arxiv", categories=("cs.CV", "cs.LG"), authors=("Kunhao Liu",), listed_on=DAY - timedelta(days=1))
    other = paper("hf_papers", id="2611.00001")
    merged = merge_items([ax, other, hf], ["hf_papers", "arxiv"])
    assert [m.id for m in merged] == ["2611.23289", "2611.00001"]
    one = merged[0]
    assert (one.source, one.url) == ("hf_papers", "https://hf_papers.example/2611.23289")
    assert (one.upvotes, one.comments, one.github_repo) == (12, 2, "https://github.com/x/y")
    assert one.categories == ("cs.CV", "cs.LG") and one.authors == ("Kunhao Liu",)
    assert one.listed_on == DAY - timedelta(days=1)


def test_precedence_follows_configuration_and_fresh_beats_stored() -> None:
    hf = paper("hf_papers", title="HF title")
    ax = paper("arxiv", title="arXiv title")
    assert combine([hf, ax], ["arxiv", "hf_papers"]).title == "arXiv title"
    fresh = paper("hf_papers", title="Fixed typo", upvotes=3)
    stored = paper("hf_papers", title="Fxed typo", upvotes=5, categories=("cs.CV",))
    (kept,) = with_stored([fresh], {stored.id: stored}.get, ["hf_papers"])
    assert (kept.title, kept.upvotes, kept.categories) == ("Fixed typo", 5, ("cs.CV",))
    (alone,) = with_stored([fresh], lambda _: None, ["hf_papers"])
    assert alone is fresh


# -- settings and registry ------------------------------------------------------------------------
def test_registry_order_is_the_merge_precedence() -> None:
    sources = SourcesSettings.model_validate(
        {
            "arxiv": {"enabled": True},
            "feeds": [{"name": "b", "url": "https://b.example/"}, {"name": "a", "url": "https://a.example/"}],
        }
    )
    assert [(kind, getattr(section, "name", kind)) for kind, section in enabled(sources)] == [
        ("hf_papers", "hf_papers"),
        ("arxiv", "arxiv"),
        ("feed", "b"),
        ("feed", "a"),
    ]
    assert FeedSettings(name="x", url="https://x.example/feed/").url == "https://x.example/feed/"  # kept as given
