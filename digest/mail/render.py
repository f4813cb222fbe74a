"""Render a :class:`Digest` to a subject, an HTML body and a text body. Pure: no I/O per email.

The MJML layout (``templates/email/digest.mjml``, with Jinja tags inside) is compiled to HTML once
per process; each email is then only a Jinja render of that HTML, which is about four times
cheaper than running MJML per email. Within the process, each paper's HTML block is rendered once
per set of matches and reused for every subscriber it reaches that way (:class:`PaperCache`), and
what the email shows of an item whoever gets it once per item (:func:`item_view`): a cycle sends
the same papers to many people. A paper's block is written from values escaped in advance
(:class:`PaperHtml`), not through Jinja's autoescape, whose Markup per value cost more than the
block; everything else in the email is autoescaped. Papers are listed in relevance order (see
:func:`rank_entries`). An HTML part that would pass Gmail's clipping limit, counted on the bytes
sent, keeps the first papers in full and lists the rest by title with a link to the full digest.

Every paper says why it is there: the rules it matched, and the matched words in view. A word
the abstract's excerpt leaves out is shown in a short snippet around it (:func:`_snippets`). A
subscriber's ``layout`` picks the paper block: "full" (byline, facts, the abstract's start) or
"compact" (title, why, one line); a digest of more than a few papers opens with its top picks,
and ends with the coverage receipt the cycle gives (what was checked, where).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from markupsafe import Markup, escape
from mjml import mjml2html

from digest.mail.html_lines import shorten_layout
from digest.mail.mime import html_part_bound, html_part_size, seven_bit_html
from digest.matching.highlight import email_both, email_html, escape_html, merge_spans, shorten, snippet_window, tidy
from digest.models import LAYOUTS, Digest, DigestEntry, Highlight, Item, RuleMatch
from digest.text import fold

# Gmail clips a message whose HTML passes "102 KB" (reports range 102-105 KB): the HTML part is
# kept to this many bytes as sent (CRLF line ends), below the lowest reading of that.
HTML_LIMIT_BYTES = 100_000
ABSTRACT_CHARS = 420
SUMMARY_CHARS = 160  # the compact layout's one line of the abstract
SNIPPET_CHARS = 160  # the words around a match the excerpt leaves out
SNIPPETS_SHOWN = 3  # per paper at most: a size bound (each rule's words are usually one snippet)
AUTHORS_SHOWN = 5
SITE_NAME = "Paper digest"  # the default of settings.site_name
TOP_PICKS = 3
TOP_PICKS_FROM = 6  # papers in a digest before it opens with its top picks
TEXT_WIDTH = 73  # the text part's lines: 4 columns of indent + 73 < 78
INDENT = "    "
PREHEADER_CHARS = 140
OVERFLOW_TITLES = 200  # past this many, the title list ends with "…and N more" (and the online link)
# Invisible filler after the preheader, so inbox previews do not run on into the body text; in
# lines of ten (a line break in it reads as one more blank), so that no line of the email is long.
PREHEADER_PAD = Markup("\n".join(["&#847;&zwnj;&nbsp;" * 10] * 4))
SOURCE_LABELS = {"hf_papers": "Hugging Face", "arxiv": "arXiv"}
CATEGORIES_SHOWN = 3
# English names whatever the process locale (strftime's %b and %A follow LC_TIME), and cheaper.
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Papers whose rendered parts stay cached per process: more than a busy cycle's distinct papers.
CACHED_PAPERS = 4096
# The layout's lines are kept this short, leaving room for what Jinja puts in them (see mime).
LAYOUT_LINE = 250


@dataclass(frozen=True, slots=True)
class Links:
    view_online: str
    manage: str
    unsubscribe: str


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    html: str
    text: str
    preheader: str
    papers_in_full: int
    # The HTML as the size check encoded it, so the message need not encode it again; empty when
    # the digest was not made by render_digest.
    html_ascii: bytes = b""
    # The HTML part's body as it goes on the wire (7-bit, CRLF), when the size check made it (a
    # digest near the limit); else empty, and the message makes it.
    html_wire: bytes = b""

    def html_bytes(self) -> bytes:
        """The HTML as bytes: ASCII, every other character written as a character reference
        (``&#233;``) by :func:`render_digest` already, or here for HTML made otherwise.

        The same document (the layout has no non-ASCII character where a reference would not be
        read: in ``<style>`` or a comment), and valid UTF-8; but an email can carry it as it is,
        in 7-bit, where UTF-8 had to be base64-encoded. Encoded once: the message and the
        archived copy both need it.
        """
        return self.html_ascii or self.html.encode("ascii", "xmlcharrefreplace")


def templates_dir() -> Path:
    return Path(str(resources.files("digest.templates")))


# Mark the block of one paper in the layout, in each layout; see :func:`_templates`.
PAPER_START, PAPER_END = "{# paper #}", "{# /paper #}"
COMPACT_START, COMPACT_END = "{# compact #}", "{# /compact #}"


# Ends each paper's block in the output of ``Templates.papers``: "<" from a feed is always escaped,
# so only the template itself can write this.
PAPER_SEPARATOR = "<paper-end/>"
# The same for ``Templates.text_papers``. The text part escapes nothing, so this one is drawn at
# random per process: a title cannot guess it (and a miscount is caught anyway).
TEXT_PAPER_SEPARATOR = f"\x00{secrets.token_hex(8)}\x00"


@dataclass(frozen=True, slots=True)
class Blocks:
    """One layout's paper blocks (see :class:`Templates`)."""

    # The blocks of several papers in one call, each ending with PAPER_SEPARATOR; given PaperHtml
    # values, escaped already (no autoescape: see PaperHtml).
    papers: jinja2.Template
    text_papers: jinja2.Template  # the same for the text part, each ending with TEXT_PAPER_SEPARATOR
    text_paper: jinja2.Template  # one paper's text block: the fallback should a title hold the separator


@dataclass(frozen=True, slots=True)
class Templates:
    html: jinja2.Template
    text: jinja2.Template
    blocks: dict[str, Blocks]  # by layout


def _paper_block(source: str, where: str, marks: tuple[str, str] = (PAPER_START, PAPER_END)) -> tuple[str, str, str]:
    """``source`` split around the paper block marked by ``{# paper #}`` and ``{# /paper #}``."""
    head, start, rest = source.partition(marks[0])
    paper_source, end, tail = rest.partition(marks[1])
    if not (start and end):
        raise RuntimeError(f"{where}: the paper block lost its {marks[0]} {marks[1]} marks")
    return head, paper_source, tail


def _layout_blocks(source: str, where: str) -> tuple[str, dict[str, str], str]:
    """``source`` split around its two paper blocks, full then compact, which stand side by side
    in the loop over papers: the head before them, each block's source, the tail after them."""
    head, full, rest = _paper_block(source, where)
    between, compact, tail = _paper_block(rest, where, (COMPACT_START, COMPACT_END))
    if between.strip():
        raise RuntimeError(f"{where}: nothing may stand between the paper block and the compact one")
    return head, {"full": full, "compact": compact}, tail


def html_in_ascii(html: str) -> str:
    """HTML, escaped already, in ASCII: other characters as character references (``&#233;``)."""
    return html if html.isascii() else html.encode("ascii", "xmlcharrefreplace").decode("ascii")


def escaped(text: str) -> str:
    """Text from the outside world as the email's HTML writes it: escaped, and in ASCII.

    What autoescape and :func:`ascii_html` make of ``text``, as a plain ``str``: the paper blocks
    are built from such values once per paper, where a :class:`Markup` per value (a Python-level
    constructor) cost more than the escaping.
    """
    return html_in_ascii(escape_html(text))


def ascii_html(value: object) -> object:
    """A value as the HTML templates write it: escaped as autoescape would, and in ASCII, other
    characters as character references.

    Jinja's ``finalize`` hook, so every ``{{ … }}`` of the layout goes through it. Done per value
    because encoding a whole email so costs three times more than encoding it in UTF-8 (the
    encoder takes a slow path over a whole string once one character is past Latin-1), while a
    value that is ASCII already (``isascii`` is a flag lookup) costs nothing, and a paper's block
    is converted once, when it is cached.
    """
    if not isinstance(value, str) or value.isascii():
        return value
    safe = value if isinstance(value, Markup) else escape(value)
    return Markup(html_in_ascii(str(safe)))


def layout_html() -> str:
    """The MJML layout compiled to HTML, with its Jinja tags: the source of the HTML templates."""
    source = (templates_dir() / "email" / "digest.mjml").read_text(encoding="utf-8")
    html_source = mjml2html(source, disable_comments=True)
    # MJML starts a line of its Outlook CSS with "."; indented, no line of an email does, and the
    # mailer can skip SMTP's dot-stuffing pass (see message.needs_dot_stuffing). Its long lines are
    # broken between attributes, so that an email's HTML can go in 7-bit as it is (see mime).
    html_source = shorten_layout(html_source.replace("\n.", "\n ."), LAYOUT_LINE)
    # The HTML is written in ASCII (see RenderedDigest.html_bytes): the layout's own characters
    # here, once (they are all in text, none in <style> or a comment), and every value as Jinja
    # writes it (ascii_html, or escaped for the paper blocks).
    return html_source.encode("ascii", "xmlcharrefreplace").decode("ascii")


@lru_cache(maxsize=1)
def _templates() -> Templates:
    """Compile the MJML layout once per process, and load the text template.

    The block of one paper (between ``{# paper #}`` and ``{# /paper #}`` in the layout, inside an
    ``mj-text`` whose HTML MJML copies as it is, and in the text template) becomes a template of
    its own, rendered once per paper and matches (:class:`PaperCache`); each email then inserts
    the cached blocks. The output is the same as one template would give.
    """
    base = templates_dir() / "email"
    head, paper_sources, tail = _layout_blocks(layout_html(), "templates/email/digest.mjml")
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=ascii_html)
    # The paper block gets PaperHtml values, every one escaped and in ASCII already.
    block_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    text_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text_env.filters["wrap"] = wrap
    text_head, text_sources, text_tail = _layout_blocks(
        (base / "digest.txt.j2").read_text(encoding="utf-8"), "templates/email/digest.txt.j2"
    )
    return Templates(
        # A block is escaped already (PaperHtml), and in ASCII: written as it is, not through
        # autoescape (a Markup made per paper and email) or ascii_html.
        html=_compiled(html_env, head + "{% autoescape false %}{{ paper.html }}{% endautoescape %}" + tail),
        text=_compiled(text_env, text_head + "{{ paper.text }}" + text_tail),
        blocks={
            layout: Blocks(
                papers=_compiled(
                    block_env, "{% for paper in papers %}" + paper_sources[layout] + PAPER_SEPARATOR + "{% endfor %}"
                ),
                text_papers=_compiled(
                    text_env,
                    "{% for paper in papers %}" + text_sources[layout] + TEXT_PAPER_SEPARATOR + "{% endfor %}",
                ),
                text_paper=_compiled(text_env, text_sources[layout]),
            )
            for layout in LAYOUTS
        },
    )


def _compiled(env: jinja2.Environment, source: str) -> jinja2.Template:
    """``env.from_string(source)``, its globals in a plain dict.

    Jinja keeps a template's globals in a ChainMap over the environment's and copies them into
    each render's context, through ChainMap's iteration and lookups, which run in Python: a few
    µs per render, and an email of new papers is four renders. The globals are the same.
    """
    template = env.from_string(source)
    template.globals = dict(template.globals)
    return template


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = INDENT) -> str:
    """Greedy word wrap for the text part, continuation lines indented.

    Each line is the longest run of whole words that fits in ``width``: found with one ``rfind``
    per line (C, not a Python step per word: wrapping was most of a render's time); a word longer
    than the line stays whole (a URL must not be cut). Runs of whitespace become one space.
    """
    # Most texts come with single spaces already (sources squash whitespace): skip the split then.
    plain = text.isprintable() and "  " not in text and text.strip(" ") == text
    words = text if plain else " ".join(text.split())
    if len(words) <= width:
        return words
    lines = []
    start = 0
    while len(words) - start > width:
        cut = words.rfind(" ", start, start + width + 1)
        if cut < 0:  # the next word alone is longer than a line
            cut = words.find(" ", start)
            if cut < 0:
                break
        lines.append(words[start:cut])
        start = cut + 1
    lines.append(words[start:])
    return ("\n" + indent).join(lines)


def wrap_parts(parts: Sequence[str], width: int = 76, separator: str = " · ") -> str:
    """``parts`` joined by ``separator`` in lines of at most ``width``, broken only between parts
    (a part longer than a line is word-wrapped), a line that goes on ending with the separator:
    "“video diffusion”: 9" never leaves its number alone on the next line."""
    lines: list[str] = []
    line = ""
    for part in parts:
        joined = f"{line}{separator}{part}" if line else part
        if len(joined) <= width or not line:
            line = joined
        else:
            lines.append(line + separator.rstrip())
            line = part
    lines.append(line)
    return "\n".join(wrap(line, width, "") for line in lines)


def subject_for(digest: Digest, site_name: str = SITE_NAME) -> str:
    """``12 new papers for “4090”, “video diffusion” · Paper digest``: what and why first, since
    phones cut a subject short, then whose email it is."""
    count = len(digest.entries)
    rules = digest.rules_matched
    shown = ", ".join(f"“{r}”" for r in rules[:3])
    if len(rules) > 3:
        shown += f" and {len(rules) - 3} more"
    return f"{count} new {'paper' if count == 1 else 'papers'} for {shown} · {site_name}"


def _byline(item: Item) -> str:
    authors = list(item.authors)
    text = ", ".join(authors[:AUTHORS_SHOWN])
    if len(authors) > AUTHORS_SHOWN:
        text += f" and {len(authors) - AUTHORS_SHOWN} more"
    if item.organization:
        text = f"{text} · {item.organization}" if text else item.organization
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word if count == 1 else word + 's'}"


def source_label(source: str) -> str:
    """How a source is named in the email: built-in kinds by their site, feeds by their own name."""
    return SOURCE_LABELS.get(source, source)


def _facts(item: Item) -> str:
    day = item.listed_on
    parts = [f"{MONTHS[day.month - 1][:3]} {day.day}, {day.year}", source_label(item.source)]
    if item.upvotes:  # "0 upvotes" says nothing (and only Hugging Face counts them)
        parts.append("▲ " + _plural(item.upvotes, "upvote"))
    if item.comments:
        parts.append(_plural(item.comments, "comment"))
    if item.categories:
        parts.append(", ".join(item.categories[:CATEGORIES_SHOWN]))
    return " · ".join(parts)


class ItemView(NamedTuple):
    """What the email shows of an item, whoever receives it (the text part has no highlights).

    A named tuple, immutable as the cache needs: a frozen dataclass sets each field through
    ``object.__setattr__`` in Python, and making fourteen so cost more than some of the values.
    """

    title: str  # tidied (see highlight.tidy): for lists, where nothing is marked in it
    url: str
    byline: str
    facts: str
    github_repo: str | None
    abstract: str  # shortened to about ABSTRACT_CHARS, raw (highlights index it)
    abstract_cut: bool
    abstract_shown: int  # how many characters of the item's abstract the excerpt shows
    summary: str  # the compact layout's line: the feed's ai_summary or the abstract, to about SUMMARY_CHARS
    summary_shown: int
    title_wrapped: str
    byline_wrapped: str
    facts_wrapped: str
    abstract_wrapped: str
    anchor: str  # the id of the paper's block, for the top picks' links
    pick_text: str  # the text part's line(s) when it is a top pick
    # As the HTML block writes them (:func:`escaped`); the title and abstract depend on the matches.
    url_html: str
    byline_html: str
    facts_html: str
    github_repo_html: str


def _shown(excerpt: str, text: str) -> int:
    """How many characters of ``text`` its excerpt by :func:`shorten` shows (not its "…")."""
    return len(excerpt) - 1 if excerpt != text and excerpt.endswith("…") else len(excerpt)


_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def anchor_for(item_id: str) -> str:
    """An id attribute for an item's block: its id, only the characters an id and a URL fragment
    take as they are."""
    return "paper-" + _ANCHOR_UNSAFE.sub("-", item_id)


@lru_cache(maxsize=CACHED_PAPERS)
def item_view(item: Item) -> ItemView:
    """Computed once per item and process: a cycle puts the same paper in many people's digests.

    Keyed by the whole (immutable) item, so an item whose upvotes changed is a new entry, never a
    stale one.
    """
    abstract = shorten(item.abstract, ABSTRACT_CHARS)
    # The compact line: the feed's own one-line summary where it has one (its words are not the
    # abstract's, so no highlight applies and every match gets its snippet), else the abstract's start.
    summary = shorten(item.ai_summary or item.abstract, SUMMARY_CHARS)
    title = tidy(item.title)
    byline = _byline(item)
    facts = _facts(item)
    return ItemView(
        title=title,
        url=item.url,
        byline=byline,
        facts=facts,
        github_repo=item.github_repo,
        abstract=abstract,
        abstract_cut=len(abstract) < len(item.abstract),
        abstract_shown=_shown(abstract, item.abstract),
        summary=summary,
        summary_shown=0 if item.ai_summary else _shown(summary, item.abstract),
        title_wrapped=wrap(title),
        byline_wrapped=wrap(byline),
        facts_wrapped=wrap(facts),
        abstract_wrapped=wrap(tidy(abstract)),
        anchor=anchor_for(item.id),
        pick_text="- " + wrap(title, TEXT_WIDTH, "  "),
        url_html=escaped(item.url),
        byline_html=escaped(byline),
        facts_html=escaped(facts),
        github_repo_html=escaped(item.github_repo or ""),
    )


class PaperHtml(NamedTuple):
    """One paper's values as its HTML block writes them: each escaped already, and in ASCII.

    The block's template runs without autoescape: Jinja's escaping made a :class:`Markup` per value
    (a Python-level constructor), and that was most of a fresh block's cost. It is given nothing
    but this, so a value the layout reads is escaped whatever the layout reads; the tests compare
    the blocks with the whole layout rendered with autoescape, hostile text included. A named
    tuple, like :class:`ItemView`.
    """

    url: str
    title: str  # the matched words in <mark>
    byline: str
    facts: str
    github_repo: str  # empty when there is none
    rules: tuple[str, ...]
    abstract: str  # shortened, the matched words in <mark>
    abstract_cut: bool
    summary: str  # the compact layout's line, the matched words in <mark>
    snippets: tuple[str, ...]  # the words around matches the excerpt leaves out, marked
    anchor: str


@dataclass(slots=True)
class PaperView:
    """One paper as one subscriber's email shows it: the item, and why it matched (rules, highlights).

    Attributes, not a dict: Jinja reads ``paper.title`` with ``getattr`` first, and on a dict that
    raised and caught an exception per lookup, hundreds of times per email. Not frozen only so
    that :func:`_render_papers` can set ``html`` and ``text`` once the blocks are rendered (a
    ``replace`` per paper cost as much as rendering it); nothing changes a view after that.
    """

    title: str
    url: str
    byline: str
    facts: str
    github_repo: str | None
    abstract_text: str
    abstract_cut: bool
    title_wrapped: str
    byline_wrapped: str
    facts_wrapped: str
    abstract_wrapped: str
    summary_wrapped: str
    rules: tuple[str, ...]
    rules_wrapped: str  # "Matched: …" in lines for the text part
    pick_text: str  # the text part's line(s) when it is a top pick
    snippets_text: tuple[str, ...]  # the snippets in lines for the text part, matches in *…*
    anchor: str
    escaped: PaperHtml  # what the HTML block writes
    html: str = ""  # the paper's block in the HTML part, escaped already (written without autoescape)
    text: str = ""  # and in the text part, after its number


def _label_order(field: str) -> tuple[bool, bool, str]:
    return (field != "title", field != "abstract", field)


def _rule_label(match: RuleMatch) -> str:
    """``rule (title, abstract)``: the rule and where it matched: the title, the abstract, then
    other fields (``author``, …) by name.

    A fixed order, not the set's: a set of strings iterates in an order that changes from one
    process to the next, and the same digest must read the same when it is rendered again.
    """
    where = sorted({h.field for h in match.highlights}, key=_label_order)
    return f"{match.rule} ({', '.join(where)})" if where else match.rule


def _word(text: str) -> str:
    """A matched text as compared for "already in view": as the rules read it (case, plurals and
    spacing aside: "Models" in the title shows a rule's "model" in the abstract). A word at a time
    through :func:`fold`, a dictionary lookup, as this runs for every match past the excerpt."""
    return fold(text) if " " not in text else " ".join(map(fold, text.split()))


def _snippets(entry: DigestEntry, shown: int) -> list[tuple[int, int]]:
    """Stretches of the abstract that put every matched word in view that the first ``shown``
    characters (the excerpt) and the title leave out, at most :data:`SNIPPETS_SHOWN`.

    The reader's first question is why a paper is there, and the answer is often the sentence
    the excerpt cut ("… 583 FPS on an RTX 4090 GPU"). A word is in view once the same text is
    marked anywhere the paper shows; each stretch is :func:`snippet_window` around the first
    word not yet in view, and puts the words inside it in view. Overlapping stretches are merged.
    """
    late: list[Highlight] = []
    shown_spans: list[Highlight] = []
    for match in entry.matches:
        for h in match.highlights:
            if h.field == "abstract":
                (late if h.end > shown else shown_spans).append(h)
            elif h.field == "title":
                shown_spans.append(h)
    if not late:
        return []
    item, text = entry.item, entry.item.abstract
    seen = {_word((text if h.field == "abstract" else item.title)[h.start : h.end]) for h in shown_spans}
    words = [(h.start, h.end, _word(text[h.start : h.end])) for h in late]
    words.sort()
    windows: list[tuple[int, int]] = []
    for start, end, word in words:
        if word in seen:
            continue
        if len(windows) == SNIPPETS_SHOWN:
            break
        begin, stop = snippet_window(text, start, end, SNIPPET_CHARS)
        windows.append((begin, stop))
        seen.update(other for first, last, other in words if begin <= first and last <= stop)
    return merge_spans(windows)


def _snippet(text: str, window: tuple[int, int], spans: list[tuple[int, int]]) -> tuple[str, str]:
    """The stretch ``window`` of ``text`` with "…" where it is cut, the spans inside it marked: as
    the HTML part writes it, and as the text part does (in lines)."""
    begin, end = window
    inside = [(max(s, begin) - begin, min(e, end) - begin) for s, e in spans if s < end and e > begin]
    html, plain = email_both(text[begin:end], inside)
    lead, tail = ("… " if begin > 0 else ""), (" …" if end < len(text) else "")
    return html_in_ascii(lead + html + tail), wrap(lead + plain + tail)


def _paper(entry: DigestEntry, layout: str) -> PaperView:
    """A paper's fields; its ``html`` block is filled in by :func:`_render_papers`."""
    item = entry.item
    view = item_view(item)
    shown = view.summary_shown if layout == "compact" else view.abstract_shown
    title_spans = []
    abstract_spans = []
    for match in entry.matches:
        for h in match.highlights:
            if h.field == "title":
                title_spans.append((h.start, h.end))
            elif h.field == "abstract":
                abstract_spans.append((h.start, h.end))
    in_view = [span for span in abstract_spans if span[1] <= shown]
    snippets = [_snippet(item.abstract, window, abstract_spans) for window in _snippets(entry, shown)]
    rules = tuple(_rule_label(m) for m in entry.matches)
    compact = layout == "compact"
    block = PaperHtml(
        view.url_html,
        html_in_ascii(email_html(item.title, title_spans)),
        view.byline_html,
        view.facts_html,
        view.github_repo_html,
        tuple(escaped(rule) for rule in rules),
        "" if compact else html_in_ascii(email_html(view.abstract, in_view)),
        view.abstract_cut,
        html_in_ascii(email_html(view.summary, in_view)) if compact else "",
        tuple(html for html, _ in snippets),
        view.anchor,
    )
    return PaperView(
        view.title,
        view.url,
        view.byline,
        view.facts,
        view.github_repo,
        view.abstract,
        view.abstract_cut,
        view.title_wrapped,
        view.byline_wrapped,
        view.facts_wrapped,
        view.abstract_wrapped,
        wrap(tidy(view.summary)) if compact else "",  # the compact layout's alone
        rules,
        wrap("Matched: " + ", ".join(rules)),
        view.pick_text,
        tuple(text for _, text in snippets),
        view.anchor,
        block,
    )


def _render_papers(entries: Sequence[DigestEntry], layout: str) -> list[PaperView]:
    """The views of ``entries`` with their HTML and text blocks, each part's in one template call.

    One call per paper would cost several times the block itself in Jinja's per-call set-up.
    """
    blocks = _templates().blocks[layout]
    papers = [_paper(e, layout) for e in entries]
    htmls = blocks.papers.render(papers=[paper.escaped for paper in papers]).split(PAPER_SEPARATOR)
    if len(htmls) != len(papers) + 1:  # the separator is the template's alone; never expected
        raise RuntimeError(f"rendered {len(htmls) - 1} paper blocks for {len(papers)} papers")
    texts = blocks.text_papers.render(papers=papers).split(TEXT_PAPER_SEPARATOR)
    if len(texts) != len(papers) + 1:  # a feed's text held the separator: one call per paper then
        texts = [blocks.text_paper.render(paper=paper) for paper in papers]
    for paper, html, text in zip(papers, htmls, texts, strict=False):
        paper.html = html
        paper.text = text
    return papers


class PaperCache:
    """Rendered papers by (item, matches): subscribers with the same rule get the same highlights.

    A cycle sends the same paper, matched by the same popular rule, to many people; each is
    rendered once per process. Least recently used out first past ``size``; thread-safe. One
    cache per layout (:func:`paper_cache`).
    """

    def __init__(self, size: int, layout: str = "full") -> None:
        self.size = size
        self.layout = layout
        self._papers: OrderedDict[DigestEntry, PaperView] = OrderedDict()
        self._lock = threading.Lock()

    def views(self, entries: Sequence[DigestEntry]) -> list[PaperView]:
        """The views of ``entries`` (distinct, as a digest's are), rendering only those not cached.

        Each entry is hashed once on a hit and twice on a miss: a dataclass hash is computed in
        Python over every field of the item and every highlight, each time.
        """
        with self._lock:
            found = [self._papers.get(e) for e in entries]
            for entry, paper in zip(entries, found, strict=True):
                if paper is not None:
                    self._papers.move_to_end(entry)
        missing = [e for e, paper in zip(entries, found, strict=True) if paper is None]
        if not missing:
            return [paper for paper in found if paper is not None]
        fresh = iter(_render_papers(missing, self.layout))
        views = [paper if paper is not None else next(fresh) for paper in found]
        with self._lock:
            for entry, paper, view in zip(entries, found, views, strict=True):
                if paper is None:
                    self._papers[entry] = view
            while len(self._papers) > self.size:
                self._papers.popitem(last=False)
        return views

    def clear(self) -> None:
        with self._lock:
            self._papers.clear()

    def __len__(self) -> int:
        return len(self._papers)


PAPERS = PaperCache(CACHED_PAPERS)
COMPACT_PAPERS = PaperCache(CACHED_PAPERS, "compact")


def paper_cache(layout: str) -> PaperCache:
    """The cache of a layout's paper blocks; an unknown layout (a hand-edited store) reads as full."""
    return COMPACT_PAPERS if layout == "compact" else PAPERS


def _rule_counts(digest: Digest) -> list[str]:
    counts: dict[str, int] = dict.fromkeys(digest.rules_matched, 0)
    for entry in digest.entries:
        for rule in {m.rule for m in entry.matches}:
            counts[rule] += 1
    return [f"“{rule}”: {count}" for rule, count in counts.items()]


@lru_cache(maxsize=64)
def _numbers(count: int) -> tuple[str, ...]:
    """The text part's numbers for ``count`` papers: "1.  " and "10. ", four columns alike."""
    return tuple(f"{n}.  " if n < 10 else f"{n}. " for n in range(1, count + 1))


class Pick(NamedTuple):
    """A top pick: a paper's title and where its link goes (its block below, or its page)."""

    title: str
    href: str
    text: str  # the text part's line(s)


def _top_picks(papers: list[PaperView], full: int) -> list[Pick]:
    """The first :data:`TOP_PICKS` papers (the most relevant: see :func:`rank_key`) of a digest of
    at least :data:`TOP_PICKS_FROM`, so that a long one says first what to read. Each links to its
    block below, or to its page when the size limit left it out."""
    if len(papers) < TOP_PICKS_FROM:
        return []
    return [Pick(p.title, f"#{p.anchor}" if n < full else p.url, p.pick_text) for n, p in enumerate(papers[:TOP_PICKS])]


def _context(
    digest: Digest,
    links: Links,
    papers: list[PaperView],
    full: int,
    listed: int,
    site_name: str = SITE_NAME,
    receipt: str = "",
) -> dict[str, Any]:
    """Everything both templates need; ``full`` papers shown whole, the next ``listed`` by title."""
    count = len(digest.entries)
    as_of = digest.as_of
    overflow = papers[full : full + listed]
    titles = "; ".join(paper.title for paper in papers[:3])
    counts = _rule_counts(digest)
    counts[0] = f"Papers per rule — {counts[0]}"
    footer = f"You get this because {digest.subscriber.email} subscribed to keyword rules on {site_name}."
    return {
        "subject": subject_for(digest, site_name),
        "preheader": shorten(f"{_plural(count, 'new paper')}: {titles}", PREHEADER_CHARS),
        "preheader_pad": PREHEADER_PAD,
        "heading": f"{_plural(count, 'new paper')} for you",
        "as_of_label": f"{WEEKDAYS[as_of.weekday()]}, {MONTHS[as_of.month - 1]} {as_of.day}, {as_of.year}",
        "intro": " · ".join(counts),
        "intro_wrapped": wrap_parts(counts),
        "notices": digest.notices,
        "top_picks": _top_picks(papers, full),
        "papers": papers[:full],
        # The text part's papers after their numbers, "1.  " and "10. " alike four columns wide (see
        # wrap); paired here, as Jinja's loop.index costs a loop object per email.
        "numbered": list(zip(_numbers(full), papers[:full], strict=True)),
        "overflow": overflow,
        "overflow_heading": f"{_plural(count - full, 'more paper')}, by title",
        "overflow_unlisted": count - full - listed,
        "receipt": receipt,
        "receipt_wrapped": wrap_parts(receipt.split(" · ")),
        "recipient": digest.subscriber.email,
        "footer_wrapped": wrap(footer, 76, ""),
        "site_name": site_name,
        "view_online_url": links.view_online,
        "manage_url": links.manage,
        "unsubscribe_url": links.unsubscribe,
    }


def render_digest(
    digest: Digest,
    links: Links,
    html_limit: int = HTML_LIMIT_BYTES,
    *,
    site_name: str = SITE_NAME,
    receipt: str = "",
) -> RenderedDigest:
    """Subject, HTML and text of one digest; the HTML part takes at most ``html_limit`` bytes as sent.

    The size is that of the part's body on the wire (:func:`digest.mail.mime.html_part_size`): CRLF
    line ends, one byte a line more than the text the templates write, which once took a
    119-paper day past Gmail's clip while the text was under it; a digest whose bound
    (:func:`digest.mail.mime.html_part_bound`) is under the limit is not measured further. Usually
    one Jinja render of each template. Past the limit the number of papers shown in full is cut
    in proportion to the excess and the HTML rendered again (a few times at most on a 200-paper
    day); the rest are listed by title, at most :data:`OVERFLOW_TITLES` of them, and the list
    ends with "…and N more" and the link to the full digest online. ``receipt`` is the coverage
    line the digest ends with (see :mod:`digest.cycle.coverage`).
    """
    templates = _templates()
    papers = paper_cache(digest.subscriber.layout).views(digest.entries)
    full, listed = len(papers), 0
    while True:
        context = _context(digest, links, papers, full, listed, site_name, receipt)
        html = templates.html.render(context)
        html_ascii = html.encode("ascii", "xmlcharrefreplace")  # a copy: the templates write ASCII
        # The bound (three counts) settles most digests; the bytes as sent only when it is near.
        wire = None
        if html_part_bound(html_ascii) <= html_limit:
            break
        wire = seven_bit_html(html_ascii)
        size = html_part_size(html_ascii, wire)
        if size <= html_limit or full + listed == 0:
            break
        excess = size - html_limit
        if full > 0:
            per_paper = max(1, size // full)
            full = max(0, full - excess // per_paper - 1)
            listed = min(len(papers) - full, OVERFLOW_TITLES)
        else:
            per_title = max(1, size // listed)
            listed = max(0, listed - excess // per_title - 1)
    text = templates.text.render(context)
    return RenderedDigest(
        subject=context["subject"],
        html=html,
        text=text,
        preheader=context["preheader"],
        papers_in_full=full,
        html_ascii=html_ascii,
        html_wire=wire or b"",
    )
