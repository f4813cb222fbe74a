"""The per-process paper cache and the fast text helpers give exactly what a fresh render gives.

Each paper's HTML block is rendered once per (item, matches) and reused for everyone else whose
rules matched it the same way; these tests hold that reuse to the output of a render with nothing
cached, in any order, across threads, and when an item changes. The blocks are written without
autoescape, from values escaped in advance: they are held to the whole layout rendered with
autoescape, hostile feed text included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import jinja2
import markupsafe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.mail import escape, papers, render, templates, views
from digest.mail.highlight import escape_html, mark, shorten, tidy
from digest.mail.paper_cache import COMPACT_PAPERS, PAPERS, PaperCache, paper_cache
from digest.mail.render import RenderedDigest, render_digest
from digest.mail.text_lines import wrap
from digest.mail.votes import VoteLinks
from digest.matching.spans import merge_spans, spans_for
from digest.models import LAYOUTS, Digest, DigestEntry, Highlight, Item, RuleMatch, Subscriber
from tests.email_fixtures import LINKS, digest_for, hostile_digest, huge_digest, sample_digest, sample_items

RULE_SETS = [
    ("4090", "video diffusion", "gaussian splatting"),
    ("4090", "video", "gaussian", "diffusion"),
    ("video diffusion",),
    ("diffusion", "real-time"),
    ("gaussian splatting", "4090", "model"),
]


def cold(digest: Digest) -> RenderedDigest:
    """A render with nothing cached, as the first digest of a process gets."""
    PAPERS.clear()
    COMPACT_PAPERS.clear()
    views.item_view.cache_clear()
    return render_digest(digest, LINKS)


def test_cached_papers_render_exactly_as_fresh_ones_in_any_order() -> None:
    items = sample_items()
    digests = [digest_for(items, rules, email=f"p{n}@example.org") for n, rules in enumerate(RULE_SETS)]
    expected = [cold(d) for d in digests]
    PAPERS.clear()
    for order in (digests, digests[::-1], digests + digests):
        for d in order:
            assert render_digest(d, LINKS) == expected[digests.index(d)]
    assert len(PAPERS) > 0


def test_the_same_paper_matched_otherwise_is_highlighted_otherwise() -> None:
    items = sample_items()
    narrow = digest_for(items, ("video diffusion",))
    wide = digest_for(items, ("video", "diffusion"))
    shared = {e.item.id for e in narrow.entries} & {e.item.id for e in wide.entries}
    assert shared
    paper = next(e.item for e in narrow.entries if e.item.id in shared)
    narrow_html = render_digest(narrow, LINKS).html
    wide_html = render_digest(wide, LINKS).html
    assert narrow_html == cold(narrow).html and wide_html == cold(wide).html
    assert ">video diffusion (" in narrow_html and ">video (" not in narrow_html
    assert ">video (" in wide_html and ">video diffusion (" not in wide_html
    assert escape.escaped(paper.url) in narrow_html and escape.escaped(paper.url) in wide_html


def test_a_hit_reuses_the_rendered_paper_and_a_changed_item_is_rendered_anew() -> None:
    digest = digest_for(sample_items(), RULE_SETS[0])
    PAPERS.clear()
    first = PAPERS.views(digest.entries)
    again = PAPERS.views(digest.entries)
    assert all(a is b for a, b in zip(first, again, strict=True))
    entry = digest.entries[0]
    upvoted = DigestEntry(replace(entry.item, upvotes=entry.item.upvotes + 1000), entry.matches)
    [view] = PAPERS.views([upvoted])
    assert view is not first[0]
    assert f"{entry.item.upvotes + 1000} upvotes" in view.html and f"{entry.item.upvotes + 1000} upvotes" in view.facts
    assert f"{entry.item.upvotes + 1000} upvotes" not in first[0].html  # the old view is untouched


def test_the_cache_keeps_only_the_most_recently_used() -> None:
    cache = PaperCache(size=3)
    entries = digest_for(sample_items(), RULE_SETS[0]).entries[:5]
    cache.views(entries[:3])
    cache.views(entries[:1])  # entry 0 is now the most recent
    cache.views(entries[3:5])
    assert len(cache) == 3
    kept = cache.views(entries[:1])
    again = cache.views(entries[:1])
    assert kept[0] is again[0] and len(cache) == 3


def test_threads_rendering_at_once_get_what_one_thread_gets() -> None:
    items = sample_items()
    digests = [digest_for(items, rules, email=f"p{n}@example.org") for n, rules in enumerate(RULE_SETS)]
    expected = [cold(d).html for d in digests]
    PAPERS.clear()
    wrong: list[tuple[int, int]] = []
    done: list[int] = []
    barrier = threading.Barrier(4)

    def work(worker: int) -> None:
        order = list(range(len(digests)))[worker:] + list(range(len(digests)))[:worker]
        barrier.wait()
        for _ in range(3):
            for n in order:
                if render_digest(digests[n], LINKS).html != expected[n]:
                    wrong.append((worker, n))
                done.append(n)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(done) == 4 * 3 * len(digests) and wrong == []


def test_hostile_text_is_escaped_in_cached_blocks_too() -> None:
    digest = hostile_digest()
    first = cold(digest).html
    assert render_digest(digest, LINKS).html == first
    assert "<script" not in first.lower() and "<img" not in first and "&lt;script&gt;" in first


def test_vote_links_are_escaped_in_the_html_and_written_as_they_are_in_the_text() -> None:
    """The vote links go into the HTML without autoescape (escaped in digest.mail.votes): a start
    with every character HTML gives a meaning to, and one past ASCII, comes out as autoescape and
    the layout's ASCII would write it."""
    digest = sample_digest()
    odd = "https://x.example/voté?a=1&b=<2>'\"&p="
    rendered = render_digest(digest, replace(LINKS, vote=odd))
    for entry in digest.entries[: rendered.papers_in_full]:
        for sign in (1, -1):
            url = f"{odd}{quote(entry.item.id, safe=':/')}&v={sign}"
            assert f'href="{escape.escaped(url)}"' in rendered.html
            assert url in rendered.text
    assert "<2>" not in rendered.html and "&lt;2&gt;" in rendered.html and "vot&#233;?a=1&amp;b" in rendered.html
    assert rendered.html.count("More like this</a>") == rendered.papers_in_full == len(digest.entries)


@pytest.mark.parametrize(
    ("old", "new", "refusal"),
    [
        (templates.PAPER_END, "", "the paper block lost its"),
        (templates.VOTES_END, "", "the vote links' part lost its"),
        # The loop over papers becomes one string joined in Python (render._joined): markup
        # anywhere else in that loop would be lost, so the layout is refused instead.
        ("{# /votes #}{% endfor %}", "{# /votes #}<hr>{% endfor %}", "the loop over papers must hold"),
    ],
)
def test_a_layout_that_lost_its_marks_or_holds_more_in_its_paper_loop_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, refusal: str
) -> None:
    (tmp_path / "email").mkdir()
    layout = (templates.templates_dir() / "email" / "digest.mjml").read_text(encoding="utf-8")
    assert old in layout
    (tmp_path / "email" / "digest.mjml").write_text(layout.replace(old, new), encoding="utf-8")
    (tmp_path / "email" / "digest.txt.j2").write_text("{# paper #}{# /paper #}{# compact #}{# /compact #}")
    monkeypatch.setattr(templates, "templates_dir", lambda: tmp_path)
    templates.email_templates.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=rf"digest\.mjml: {refusal}"):
            templates.email_templates()
    finally:
        monkeypatch.undo()
        templates.email_templates.cache_clear()


def reference_wrap(text: str, width: int = 73, indent: str = "    ") -> str:
    """The word-by-word loop ``wrap`` replaced: greedy, words never cut, whitespace runs squashed."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return ("\n" + indent).join(lines)


words = st.text(st.characters(codec="utf-8"), min_size=0, max_size=90)
spaced = st.lists(
    st.one_of(words, st.sampled_from([" ", "  ", "\n", "\t", "\xa0", "\u2003", "x" * 80])), max_size=40
).map("".join)


def reference_shorten(text: str, limit: int) -> str:
    """``shorten`` as it was before it skipped searching for "? " and "! " in a window without them."""
    if len(text) <= limit:
        return text
    window = text[:limit]
    sentence_end = max(window.rfind(". "), window.rfind("? "), window.rfind("! "))
    if sentence_end >= limit * 0.6:
        return window[: sentence_end + 1]
    space = window.rfind(" ")
    return (window[:space] if space > 0 else window).rstrip(",;: ") + "…"


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from(["word", "é", " ", ". ", "? ", "! ", "?", ", ", ";"]), max_size=30).map("".join),
    limit=st.integers(min_value=1, max_value=60),
)
def test_shorten_cuts_where_it_did(text: str, limit: int) -> None:
    assert shorten(text, limit) == reference_shorten(text, limit)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(words, spaced), width=st.integers(min_value=1, max_value=90))
def test_wrap_is_the_greedy_word_wrap(text: str, width: int) -> None:
    assert wrap(text, width) == reference_wrap(text, width)
    assert wrap(text, width, "") == reference_wrap(text, width, "")


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_escape_html_is_markupsafes_escape(text: str) -> None:
    assert escape_html(text) == str(markupsafe.escape(text))
    assert str(mark(text, [])) == str(markupsafe.escape(text))


def one_layout(source: str, layout: str = "full") -> str:
    """A template's source with the other layout's paper block left out: the loop over papers holds
    both blocks, and the split picks one per digest."""
    if layout == "full":
        head, _, rest = source.partition(templates.COMPACT_START)
        return head + rest.partition(templates.COMPACT_END)[2]
    head, _, rest = source.partition(templates.PAPER_START)
    return head + rest.partition(templates.PAPER_END)[2]


def whole_text_template(layout: str = "full") -> jinja2.Template:
    """``digest.txt.j2`` as one template, its paper marks only comments: what the split must match."""
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["wrap"] = wrap
    source = (templates.templates_dir() / "email" / "digest.txt.j2").read_text(encoding="utf-8")
    return env.from_string(one_layout(source, layout))


def context_for(
    digest: Digest,
    papers: list[views.PaperView],
    full: int,
    listed: int,
    receipt: str = "",
    links: render.Links = LINKS,
) -> dict[str, object]:
    """The templates' values for ``full`` papers in full, ``listed`` by title: as render has them."""
    votes = VoteLinks(links.vote, digest.entries)
    return {**render._context(digest, links, papers, receipt=receipt), **render._shown(papers, full, listed, votes)}


def in_layout(digest: Digest, layout: str) -> Digest:
    digest.subscriber = replace(digest.subscriber, layout=layout)
    return digest


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("make", [sample_digest, hostile_digest, huge_digest])
def test_the_text_part_is_what_the_whole_text_template_gives(make: Callable[[], Digest], layout: str) -> None:
    digest = in_layout(make(), layout)
    rendered = cold(digest)
    papers = paper_cache(layout).views(digest.entries)
    listed = min(len(papers) - rendered.papers_in_full, render.OVERFLOW_TITLES)
    context = context_for(digest, papers, rendered.papers_in_full, listed)
    assert rendered.text == whole_text_template(layout).render(context)
    assert templates.TEXT_PAPER_SEPARATOR not in rendered.text


def test_a_title_holding_the_text_separator_is_rendered_one_paper_at_a_time() -> None:
    """The text part escapes nothing, so a feed could in principle carry the separator of the
    batched text render; the blocks are then rendered one by one, and nothing is lost or shifted."""
    base = sample_digest()
    odd = replace(base.entries[0].item, title=f"Before {templates.TEXT_PAPER_SEPARATOR} after")
    base.entries = [DigestEntry(odd, base.entries[0].matches), *base.entries[1:]]
    rendered = cold(base)
    papers = PAPERS.views(base.entries)
    context = context_for(base, papers, len(papers), 0)
    assert rendered.text == whole_text_template().render(context)
    assert f"1.  Before {templates.TEXT_PAPER_SEPARATOR} after" in rendered.text
    assert f"2.  {wrap(base.entries[1].item.title)}" in rendered.text


def whole_html_template(layout: str = "full") -> jinja2.Template:
    """The compiled layout as one template with autoescape, every value as it came from the feed
    (the vote links too): what the paper blocks and the vote links, rendered without autoescape
    from values escaped in advance and joined in Python, must give."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=escape.ascii_html)
    source = one_layout(templates.layout_html(), layout)
    source = source.replace(templates.VOTES_START, "{% set vote = votes[loop.index0] if votes else None %}")
    return env.from_string(source.replace("vote.more_html", "vote.more").replace("vote.less_html", "vote.less"))


def emphasised(text: str, spans: list[tuple[int, int]]) -> markupsafe.Markup:
    """``text`` with ``spans`` in ``<mark><b>``, the rest tidied and escaped by ``markupsafe``."""
    out = markupsafe.Markup()
    cursor = 0
    for start, end in merge_spans(s for s in spans if 0 <= s[0] < s[1] <= len(text)):
        out += tidy(text[cursor:start]) + markupsafe.Markup("<mark><b>%s</b></mark>") % tidy(text[start:end])
        cursor = end
    return out + tidy(text[cursor:])


def raw_paper(entry: DigestEntry, layout: str = "full") -> SimpleNamespace:
    """A paper's values unescaped, only its matched words marked (escaped around them)."""
    item = entry.item
    view = views.item_view(item)
    highlights = [h for match in entry.matches for h in match.highlights]
    all_abstract = spans_for(highlights, "abstract")
    shown = view.summary_shown if layout == "compact" else view.abstract_shown
    in_view = [span for span in all_abstract if span[1] <= shown]
    snippets = []
    for begin, end in papers._snippets(entry, shown):
        inside = [(max(s, begin) - begin, min(e, end) - begin) for s, e in all_abstract if s < end and e > begin]
        body = emphasised(item.abstract[begin:end], inside)
        snippets.append(("… " if begin else "") + body + (" …" if end < len(item.abstract) else ""))
    return SimpleNamespace(
        url=item.url,
        title=emphasised(item.title, spans_for(highlights, "title")),
        byline=view.byline,
        facts=view.facts,
        github_repo=item.github_repo,
        rules=tuple(papers._rule_label(match) for match in entry.matches),
        abstract="" if layout == "compact" else emphasised(view.abstract, in_view),
        abstract_cut=view.abstract_cut,
        summary=emphasised(view.summary, in_view) if layout == "compact" else "",
        snippets=snippets,
        anchor=views.anchor_for(item.id),
    )


def autoescaped_html(digest: Digest, rendered: RenderedDigest, receipt: str = "", links: render.Links = LINKS) -> str:
    layout = digest.subscriber.layout
    papers = paper_cache(layout).views(digest.entries)
    full = rendered.papers_in_full
    listed = min(len(papers) - full, render.OVERFLOW_TITLES)
    context = context_for(digest, papers, full, listed, receipt, links)
    context["papers"] = [raw_paper(entry, layout) for entry in digest.entries[:full]]
    return whole_html_template(layout).render(context)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("make", [sample_digest, hostile_digest, huge_digest])
def test_the_html_is_what_the_whole_layout_gives_with_autoescape(make: Callable[[], Digest], layout: str) -> None:
    digest = in_layout(make(), layout)
    rendered = cold(digest)
    assert rendered.html == autoescaped_html(digest, rendered)
    assert render_digest(digest, LINKS).html == rendered.html  # and so is a cached render
    receipt = "Checked <b>x</b> & y."
    with_receipt = render_digest(digest, LINKS, receipt=receipt)
    assert with_receipt.html == autoescaped_html(digest, with_receipt, receipt)
    voting = replace(LINKS, vote="https://x.example/voté?t=<a>&'\"&p=")
    with_votes = render_digest(digest, voting)
    assert with_votes.html == autoescaped_html(digest, with_votes, links=voting)
    assert with_votes.html.count("Not for me</a>") == with_votes.papers_in_full > 0


feed_text = st.text(st.sampled_from("<>&\"' ab4é—🚀\n"), max_size=30) | st.text(max_size=30)


@st.composite
def hostile_entries(draw: st.DrawFn) -> DigestEntry:
    title = draw(feed_text)
    abstract = draw(feed_text | st.text(st.sampled_from("ab <&. "), min_size=400, max_size=500))
    optional = st.none() | feed_text
    item = Item(
        id=draw(st.text("abc", min_size=1, max_size=6)),
        source=draw(st.sampled_from(["hf_papers", "arxiv"]) | feed_text),
        title=title,
        abstract=abstract,
        url=draw(feed_text),
        listed_on=date(2026, 11, 20),
        authors=tuple(draw(st.lists(feed_text, max_size=7))),
        upvotes=draw(st.integers(0, 3)),
        comments=draw(st.integers(0, 2)),
        github_repo=draw(optional),
        organization=draw(optional),
        categories=tuple(draw(st.lists(feed_text, max_size=4))),
    )

    def spans(field: str, text: str) -> list[Highlight]:
        bounds = st.tuples(st.integers(0, len(text)), st.integers(0, len(text)))
        return [Highlight(field, min(b), max(b)) for b in draw(st.lists(bounds, max_size=3)) if b[0] != b[1]]

    matches = tuple(
        RuleMatch(rule, tuple(spans("title", title) + spans("abstract", abstract)))
        for rule in draw(st.lists(feed_text.filter(bool), min_size=1, max_size=3, unique=True))
    )
    return DigestEntry(item, matches)


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(hostile_entries(), min_size=1, max_size=4, unique_by=lambda e: e.item.id))
def test_values_escaped_in_advance_give_what_autoescape_gives(entries: list[DigestEntry]) -> None:
    rules = tuple(dict.fromkeys(match.rule for entry in entries for match in entry.matches))
    for layout in LAYOUTS:
        digest = Digest(Subscriber("a@example.org", rules, layout=layout), entries, date(2026, 11, 20), "abc")
        rendered = cold(digest)
        assert rendered.html == autoescaped_html(digest, rendered)
