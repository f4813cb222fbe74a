"""Rendering and the MIME message, without a server."""

from __future__ import annotations

from datetime import UTC, date, datetime
from email import message_from_bytes
from email.policy import default as default_policy

from digest.highlight import mark, shorten
from digest.message import build_message
from digest.models import Digest, DigestEntry, Highlight, Item, RuleMatch, Subscriber
from digest.render import Links, rank_entries, render_digest

LINKS = Links(
    "https://d.example/digest/1?token=t", "https://d.example/manage?token=m", "https://d.example/unsubscribe?token=u"
)


def entry(
    title: str, abstract: str = "", upvotes: int = 0, rules: tuple[str, ...] = ("4090",), field: str = "title"
) -> DigestEntry:
    item = Item(
        id=title[:8],
        source="hf_papers",
        title=title,
        abstract=abstract,
        url="https://hf.example/papers/1",
        listed_on=date(2026, 11, 20),
        authors=tuple(f"Author {n}" for n in range(7)),
        upvotes=upvotes,
    )
    return DigestEntry(item, tuple(RuleMatch(r, (Highlight(field, 0, 3),)) for r in rules))


def digest(entries: list[DigestEntry]) -> Digest:
    return Digest(Subscriber("a@example.org", ("4090",)), entries, date(2026, 11, 20), "abc")


def test_everything_from_a_feed_is_escaped() -> None:
    rendered = render_digest(
        digest([entry('<script>alert(1)</script> "4090" & <b>', "<img src=x onerror=alert(1)>")]), LINKS
    )
    assert "<script>alert(1)" not in rendered.html and "<img src=x" not in rendered.html
    assert "&lt;script&gt;" in rendered.html and "&lt;img src=x" in rendered.html
    assert "<script" not in rendered.html.lower()


def test_highlights_mark_matched_words() -> None:
    assert str(mark("RTX 4090 <x>", [(4, 8)])) == "RTX <mark>4090</mark> &lt;x&gt;"
    assert str(mark("abcdef", [(0, 2), (1, 4)])) == "<mark>abcd</mark>ef"


def test_shorten_cuts_at_a_sentence_or_word() -> None:
    text = "First sentence is here. Second one goes on and on and on."
    assert shorten(text, 36) == "First sentence is here."
    assert shorten("word " * 20, 23).endswith("…")
    assert shorten("short", 40) == "short"


def test_subject_says_how_many_and_which_rules() -> None:
    rendered = render_digest(
        digest([entry("A 4090 paper"), entry("Another", rules=("4090", "video diffusion"))]), LINKS
    )
    assert rendered.subject == "2 new papers for “4090”, “video diffusion”"
    assert "Matched: 4090 (title)" in rendered.text
    assert "and 2 more" in rendered.text  # seven authors, five shown


def test_ranking_rules_then_title_then_upvotes() -> None:
    abstract_only = entry("abstract match, popular", upvotes=99, field="abstract")
    title = entry("title match", upvotes=1)
    two_rules = entry("two rules", rules=("4090", "gpu"), field="abstract")
    popular_title = entry("title match, popular", upvotes=50)
    ranked = rank_entries([abstract_only, title, two_rules, popular_title])
    assert [e.item.title for e in ranked] == [
        "two rules",
        "title match, popular",
        "title match",
        "abstract match, popular",
    ]


def test_a_huge_day_stays_under_gmail_clipping() -> None:
    many = [entry(f"Paper {n} about 4090", "word " * 300) for n in range(200)]
    rendered = render_digest(digest(many), LINKS)
    assert len(rendered.html.encode()) <= 100 * 1024
    assert 0 < rendered.papers_in_full < 200
    assert "See the full digest online" in rendered.html and LINKS.view_online.replace("?", "?") in rendered.html
    assert "Paper 199 about 4090" in rendered.html  # listed by title in the overflow


def test_message_is_multipart_with_one_click_unsubscribe() -> None:
    rendered = render_digest(digest([entry("A 4090 paper")]), LINKS)
    message = build_message(
        rendered,
        from_address="papers@d.example",
        to_address="a@example.org",
        to_name="Ann",
        unsubscribe_url=LINKS.unsubscribe,
        list_id="digest.d.example",
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    raw = message.as_bytes()
    assert b"\r\n" in raw
    parsed = message_from_bytes(raw, policy=default_policy)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]  # type: ignore[attr-defined]
    assert parsed["List-Unsubscribe"] == f"<{LINKS.unsubscribe}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"].endswith("@d.example>")
    assert parsed["To"] == "Ann <a@example.org>"
