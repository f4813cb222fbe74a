"""Render a :class:`Digest` to a subject, an HTML body and a text body. Pure: no I/O per email.

The MJML layout (``templates/email/digest.mjml``, with Jinja tags inside) is compiled to HTML once
per process; each email is then only a Jinja render of that HTML, which is about four times
cheaper than running MJML per email. Within the process, each paper's HTML block is rendered once
per set of matches and reused for every subscriber it reaches that way (:class:`PaperCache`), and
what the email shows of an item whoever gets it once per item (:func:`item_view`): a cycle sends
the same papers to many people. A paper's block is written from values escaped in advance
(:class:`PaperHtml`), not through Jinja's autoescape, whose Markup per value cost more than the
block; everything else in the email is autoescaped. Papers are listed in relevance order (see
:func:`rank_entries`). An HTML body that would pass Gmail's 102 KB clipping limit keeps the first
papers in full and lists the rest by title with a link to the full digest online.
"""

from __future__ import annotations

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

from digest.highlight import escape_html, marked_html, shorten
from digest.html_lines import shorten_layout
from digest.models import Digest, DigestEntry, Item, RuleMatch

HTML_LIMIT_BYTES = 100 * 1024  # Gmail clips at 102 KB; keep a margin for headers it counts
ABSTRACT_CHARS = 420
AUTHORS_SHOWN = 5
SITE_NAME = "digest"
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


# Marks the block of one paper in the layout; see :func:`_templates`.
PAPER_START, PAPER_END = "{# paper #}", "{# /paper #}"


# Ends each paper's block in the output of ``Templates.papers``: "<" from a feed is always escaped,
# so only the template itself can write this.
PAPER_SEPARATOR = "<paper-end/>"
# The same for ``Templates.text_papers``. The text part escapes nothing, so this one is drawn at
# random per process: a title cannot guess it (and a miscount is caught anyway).
TEXT_PAPER_SEPARATOR = f"\x00{secrets.token_hex(8)}\x00"


@dataclass(frozen=True, slots=True)
class Templates:
    html: jinja2.Template
    # The blocks of several papers in one call, each ending with PAPER_SEPARATOR; given PaperHtml
    # values, escaped already (no autoescape: see PaperHtml).
    papers: jinja2.Template
    text: jinja2.Template
    text_papers: jinja2.Template  # the same for the text part, each ending with TEXT_PAPER_SEPARATOR
    text_paper: jinja2.Template  # one paper's text block: the fallback should a title hold the separator


def _paper_block(source: str, where: str) -> tuple[str, str, str]:
    """``source`` split around the paper block marked by ``{# paper #}`` and ``{# /paper #}``."""
    head, start, rest = source.partition(PAPER_START)
    paper_source, end, tail = rest.partition(PAPER_END)
    if not (start and end):
        raise RuntimeError(f"{where}: the paper block lost its {PAPER_START} {PAPER_END} marks")
    return head, paper_source, tail


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
    head, paper_source, tail = _paper_block(layout_html(), "templates/email/digest.mjml")
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=ascii_html)
    # The paper block gets PaperHtml values, every one escaped and in ASCII already.
    block_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    text_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text_env.filters["wrap"] = wrap
    text_head, text_paper, text_tail = _paper_block(
        (base / "digest.txt.j2").read_text(encoding="utf-8"), "templates/email/digest.txt.j2"
    )
    return Templates(
        # A block is escaped already (PaperHtml), and in ASCII: written as it is, not through
        # autoescape (a Markup made per paper and email) or ascii_html.
        html=_compiled(html_env, head + "{% autoescape false %}{{ paper.html }}{% endautoescape %}" + tail),
        papers=_compiled(block_env, "{% for paper in papers %}" + paper_source + PAPER_SEPARATOR + "{% endfor %}"),
        text=_compiled(text_env, text_head + "{{ paper.text }}" + text_tail),
        text_papers=_compiled(
            text_env, "{% for paper in papers %}" + text_paper + TEXT_PAPER_SEPARATOR + "{% endfor %}"
        ),
        text_paper=_compiled(text_env, text_paper),
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


def wrap(text: str, width: int = 73, indent: str = "   ") -> str:
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


RankKey = tuple[int, bool, int, str]


def rank_key(entry: DigestEntry) -> RankKey:
    """Sorts most relevant first: more distinct rules matched, then a title match, then upvotes,
    then title."""
    matches, item = entry.matches, entry.item
    return (-len({m.rule for m in matches}), not any(m.in_title for m in matches), -item.upvotes, item.title.casefold())


def rank_entries(entries: list[DigestEntry]) -> list[DigestEntry]:
    """Most relevant first (see :func:`rank_key`); ties keep their order."""
    return sorted(entries, key=rank_key)


def subject_for(digest: Digest) -> str:
    count = len(digest.entries)
    rules = digest.rules_matched
    shown = ", ".join(f"“{r}”" for r in rules[:3])
    if len(rules) > 3:
        shown += f" and {len(rules) - 3} more"
    return f"{count} new {'paper' if count == 1 else 'papers'} for {shown}"


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
    if item.upvotes or item.source == "hf_papers":  # only Hugging Face counts upvotes; "▲ 0" elsewhere misleads
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

    title: str
    url: str
    byline: str
    facts: str
    github_repo: str | None
    abstract: str  # shortened to about ABSTRACT_CHARS
    abstract_cut: bool
    title_wrapped: str
    byline_wrapped: str
    abstract_wrapped: str
    # As the HTML block writes them (:func:`escaped`); the title and abstract depend on the matches.
    url_html: str
    byline_html: str
    facts_html: str
    github_repo_html: str


@lru_cache(maxsize=CACHED_PAPERS)
def item_view(item: Item) -> ItemView:
    """Computed once per item and process: a cycle puts the same paper in many people's digests.

    Keyed by the whole (immutable) item, so an item whose upvotes changed is a new entry, never a
    stale one.
    """
    abstract = shorten(item.abstract, ABSTRACT_CHARS)
    byline = _byline(item)
    facts = _facts(item)
    return ItemView(
        title=item.title,
        url=item.url,
        byline=byline,
        facts=facts,
        github_repo=item.github_repo,
        abstract=abstract,
        abstract_cut=len(abstract) < len(item.abstract),
        title_wrapped=wrap(item.title),
        byline_wrapped=wrap(byline),
        abstract_wrapped=wrap(abstract),
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
    abstract_wrapped: str
    rules: tuple[str, ...]
    rules_text: str
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


def _paper(entry: DigestEntry) -> PaperView:
    """A paper's fields; its ``html`` block is filled in by :func:`_render_papers`."""
    item = entry.item
    view = item_view(item)
    cut = len(view.abstract)
    title_spans = []
    abstract_spans = []
    for match in entry.matches:
        for h in match.highlights:
            if h.field == "title":
                title_spans.append((h.start, h.end))
            elif h.field == "abstract" and h.end <= cut:
                abstract_spans.append((h.start, h.end))
    rules = tuple(_rule_label(m) for m in entry.matches)
    block = PaperHtml(
        view.url_html,
        html_in_ascii(marked_html(item.title, title_spans)),
        view.byline_html,
        view.facts_html,
        view.github_repo_html,
        tuple(escaped(rule) for rule in rules),
        html_in_ascii(marked_html(view.abstract, abstract_spans)),
        view.abstract_cut,
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
        view.abstract_wrapped,
        rules,
        ", ".join(rules),
        block,
    )


def _render_papers(entries: Sequence[DigestEntry]) -> list[PaperView]:
    """The views of ``entries`` with their HTML and text blocks, each part's in one template call.

    One call per paper would cost several times the block itself in Jinja's per-call set-up.
    """
    templates = _templates()
    papers = [_paper(e) for e in entries]
    blocks = templates.papers.render(papers=[paper.escaped for paper in papers]).split(PAPER_SEPARATOR)
    if len(blocks) != len(papers) + 1:  # the separator is the template's alone; never expected
        raise RuntimeError(f"rendered {len(blocks) - 1} paper blocks for {len(papers)} papers")
    texts = templates.text_papers.render(papers=papers).split(TEXT_PAPER_SEPARATOR)
    if len(texts) != len(papers) + 1:  # a feed's text held the separator: one call per paper then
        texts = [templates.text_paper.render(paper=paper) for paper in papers]
    for paper, block, text in zip(papers, blocks, texts, strict=False):
        paper.html = block
        paper.text = text
    return papers


class PaperCache:
    """Rendered papers by (item, matches): subscribers with the same rule get the same highlights.

    A cycle sends the same paper, matched by the same popular rule, to many people; each is
    rendered once per process. Least recently used out first past ``size``; thread-safe.
    """

    def __init__(self, size: int) -> None:
        self.size = size
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
        fresh = iter(_render_papers(missing))
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


def _rule_counts(digest: Digest) -> str:
    counts: dict[str, int] = dict.fromkeys(digest.rules_matched, 0)
    for entry in digest.entries:
        for rule in {m.rule for m in entry.matches}:
            counts[rule] += 1
    return " · ".join(f"“{rule}”: {count}" for rule, count in counts.items())


def _context(digest: Digest, links: Links, papers: list[PaperView], full: int, listed: int) -> dict[str, Any]:
    """Everything both templates need; ``full`` papers shown whole, the next ``listed`` by title."""
    count = len(digest.entries)
    as_of = digest.as_of
    overflow = papers[full : full + listed]
    titles = "; ".join(e.item.title for e in digest.entries[:3])
    return {
        "subject": subject_for(digest),
        "preheader": shorten(f"{_plural(count, 'new paper')}: {titles}", PREHEADER_CHARS),
        "preheader_pad": PREHEADER_PAD,
        "heading": f"{_plural(count, 'new paper')} for you",
        "as_of_label": f"{WEEKDAYS[as_of.weekday()]}, {MONTHS[as_of.month - 1]} {as_of.day}, {as_of.year}",
        "intro": f"Papers per rule — {_rule_counts(digest)}",
        "notices": digest.notices,
        "papers": papers[:full],
        "overflow": overflow,
        "overflow_heading": f"{_plural(count - full, 'more paper')}, by title",
        "overflow_unlisted": count - full - listed,
        "recipient": digest.subscriber.email,
        "site_name": SITE_NAME,
        "view_online_url": links.view_online,
        "manage_url": links.manage,
        "unsubscribe_url": links.unsubscribe,
    }


def render_digest(digest: Digest, links: Links, html_limit: int = HTML_LIMIT_BYTES) -> RenderedDigest:
    """Subject, HTML and text of one digest; the HTML fits in ``html_limit`` bytes.

    Usually one Jinja render of each template. Past the limit the number of papers shown in full
    is cut in proportion to the excess and the HTML rendered again (a few times at most on a
    200-paper day); the rest are listed by title, at most :data:`OVERFLOW_TITLES` of them, and
    the list ends with "…and N more" and the link to the full digest online.
    """
    templates = _templates()
    papers = PAPERS.views(digest.entries)
    full, listed = len(papers), 0
    while True:
        context = _context(digest, links, papers, full, listed)
        html = templates.html.render(context)
        html_ascii = html.encode("ascii", "xmlcharrefreplace")  # a copy: the templates write ASCII
        size = len(html_ascii)
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
    )
