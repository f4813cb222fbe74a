"""Rendering and the MIME message, without a server."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from html.parser import HTMLParser
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from digest.mail.escape import ascii_html
from digest.mail.highlight import mark, shorten
from digest.mail.message import build_message
from digest.mail.render import HTML_LIMIT_BYTES, OVERFLOW_TITLES, Links, render_digest
from digest.mail.text_lines import wrap
from digest.matching.ranking import rank_entries
from digest.models import Digest, DigestEntry, Highlight, Item, RuleMatch, Subscriber
from tests.email_fixtures import LINKS as FIXTURE_LINKS
from tests.email_fixtures import hostile_digest, html_reading, huge_digest, sample_digest

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
    assert rendered.subject == "2 new papers for “4090”, “video diffusion” · Paper digest"
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
        digest_id="d1",
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


class MailHtml(HTMLParser):
    """Collects what a mail client cares about, and checks that every element that opens closes."""

    VOID: ClassVar[set[str]] = {"meta", "br", "img", "hr", "link", "input", "col", "area", "base", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        self.in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        self.in_style = False

    def handle_data(self, data: str) -> None:
        if self.in_style:
            self.style += data


def parsed(html: str) -> MailHtml:
    parser = MailHtml()
    parser.feed(html)
    parser.close()
    return parser


@pytest.mark.parametrize("make", [sample_digest, hostile_digest, huge_digest])
def test_html_is_fit_for_mail_clients(make: Callable[[], Digest]) -> None:
    digest = make()
    rendered = render_digest(digest, FIXTURE_LINKS)
    page = parsed(rendered.html)
    assert page.problems == [] and page.stack == []
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and "iframe" not in tags and "form" not in tags
    assert not [a for t, a in page.tags if t == "link"], "no external stylesheets"
    assert "@import" not in page.style and "url(" not in page.style
    assert all(a.get("alt") is not None for t, a in page.tags if t == "img")
    assert not [a for t, a in page.tags if any(k.startswith("on") for k in a)], "no event handlers"
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    ids = {a["id"] for _, a in page.tags if a.get("id")}
    assert hrefs and all(h is not None and (h.startswith("https://") or h[1:] in ids) for h in hrefs)
    assert len(ids) == len([a for _, a in page.tags if a.get("id")]), "ids are unique"
    assert page.tags[0][0] == "html" and page.tags[0][1]["lang"] == "en"
    assert tags.count("h1") == 1
    assert tags.count("h2") == rendered.papers_in_full + (rendered.papers_in_full < len(digest.entries))
    assert str(ascii_html(rendered.preheader)) in rendered.html and rendered.preheader.startswith(
        f"{len(digest.entries)} new paper"
    )


def test_a_200_paper_day_of_real_listings_is_clipped_safe() -> None:
    digest = huge_digest(200)
    rendered = render_digest(digest, FIXTURE_LINKS)
    size = len(rendered.html.encode())
    assert 0.85 * HTML_LIMIT_BYTES < size <= HTML_LIMIT_BYTES  # full up to the limit, not far below it
    assert 10 < rendered.papers_in_full < 200
    rest = digest.entries[rendered.papers_in_full :]
    for entry in rest:  # each remaining paper listed by title and link, in the HTML and the text
        assert str(ascii_html(entry.item.title)) in rendered.html and entry.item.url in rendered.html
        assert entry.item.url in rendered.text
    assert f"{len(rest)} more papers, by title" in rendered.html
    assert FIXTURE_LINKS.view_online in rendered.text and "See the full digest online" in rendered.html
    assert rendered.text.count("   Matched: ") == rendered.papers_in_full


def test_even_thousands_of_papers_stay_under_the_limit() -> None:
    rendered = render_digest(huge_digest(1500), FIXTURE_LINKS)
    assert len(rendered.html.encode()) <= HTML_LIMIT_BYTES
    assert rendered.papers_in_full > 5  # the best papers still in full, not only titles
    unlisted = re.search(r"&#8230;and (\d+) more\.", rendered.html)  # "…", as the HTML writes it
    assert unlisted and int(unlisted.group(1)) == 1500 - rendered.papers_in_full - OVERFLOW_TITLES
    assert f"...and {unlisted.group(1)} more." in rendered.text


def test_wrap_keeps_words_and_urls_whole() -> None:
    text = "alpha beta gamma delta " * 5 + "https://example.org/" + "x" * 90
    lines = wrap(text, 30, "  ").split("\n")
    assert all(len(line) <= 32 for line in lines[:-1])
    assert lines[-1] == "  https://example.org/" + "x" * 90
    assert " ".join(line.strip() for line in lines) == " ".join(text.split())


def test_text_part_reads_on_its_own() -> None:
    digest = sample_digest()
    text = render_digest(digest, FIXTURE_LINKS).text
    first = digest.entries[0].item
    assert text.startswith(f"Paper digest · Friday, November 20, 2026\n\n{len(digest.entries)} new papers for you\n")
    assert f"1.  {first.title.split()[0]}" in text and first.url in text
    for link in (FIXTURE_LINKS.view_online, FIXTURE_LINKS.manage, FIXTURE_LINKS.unsubscribe):
        assert link in text
    assert "<mark>" not in text and "&amp;" not in text
    assert max(len(line) for line in text.splitlines() if "://" not in line) <= 78


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn"))))
def test_values_are_written_escaped_and_in_ascii(text: str) -> None:
    """What Jinja writes of a value (``ascii_html``, then autoescape) is ASCII and reads back as it.
    (Noncharacters such as U+FDD0, category Cn, are left out: ``html.unescape`` drops their
    references, as HTML's parser treats them as errors.)"""
    written = str(escape(ascii_html(text)))
    assert written.isascii() and "<" not in written and '"' not in written
    assert html.unescape(written) == text


def test_the_html_is_ascii_and_reads_as_the_feeds_wrote_it() -> None:
    rendered = render_digest(hostile_digest(), FIXTURE_LINKS)
    assert rendered.html.isascii() and rendered.html_bytes() == rendered.html.encode("ascii")
    shown = " ".join(event[1] for event in html_reading(rendered.html) if event[0] == "text")
    assert "4090 上的视频扩散 — عربى — 🚀 émigré" in shown  # a title: a link, and 4090 marked in it
    assert ": 日本語のテキスト, עברית, and emoji 🎉." in shown
    assert "Papers per rule — “4090”: 3" in shown


LABEL_SCRIPT = """
from datetime import date
from digest.models import Digest, DigestEntry, Item, Subscriber
from digest.mail.render import Links, render_digest
from digest.matching.rules import ItemIndex, Matcher, parse_rules
item = Item(id="2611.00001", source="hf_papers", title="GPU kernels", abstract="Fast GPU kernels.",
            url="https://hf.example/papers/2611.00001", listed_on=date(2026, 11, 20),
            authors=("Ada Gpu",), ai_keywords=("gpu inference",), organization="GPU Lab")
rule = "gpu OR author:gpu OR org:gpu OR keyword:gpu"
matches = Matcher(ItemIndex([item])).match(parse_rules([rule]))[0]
digest = Digest(Subscriber("a@example.org", (rule,)), [DigestEntry(item, matches)], date(2026, 11, 20), "abc")
text = render_digest(digest, Links("https://d.example/o", "https://d.example/m", "https://d.example/u")).text
start = text.index("Matched:")
print(" ".join(text[start:].split(chr(10) * 2)[0].split()))
"""


def test_where_a_rule_matched_reads_the_same_in_every_process() -> None:
    """The fields a rule matched in are listed title, abstract, then by name, never in a set's order
    (which changes with each process's string hashing): the same digest reads the same when rendered again."""
    seen = set()
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", LABEL_SCRIPT], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        seen.add(result.stdout.strip())
    expected = "Matched: gpu OR author:gpu OR org:gpu OR keyword:gpu (title, abstract, author, keyword, org)"
    assert seen == {expected}
