"""What the email shows of a paper: the item's own parts, whoever gets it, and one subscriber's view.

:class:`ItemView` is computed once per item and process (:func:`item_view`): a cycle puts the same
paper in many people's digests. :class:`PaperView` adds why it is there (the rules, the matched
words), and :class:`PaperHtml` is its HTML block's values, each escaped in advance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from digest.mail.escape import escaped
from digest.mail.highlight import shorten, tidy
from digest.mail.text_lines import TEXT_WIDTH, wrap
from digest.models import Item
from digest.sources.registry import source_label

ABSTRACT_CHARS = 420
SUMMARY_CHARS = 160  # the compact layout's one line of the abstract
AUTHORS_SHOWN = 5
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


def _byline(item: Item) -> str:
    authors = list(item.authors)
    text = ", ".join(authors[:AUTHORS_SHOWN])
    if len(authors) > AUTHORS_SHOWN:
        text += f" and {len(authors) - AUTHORS_SHOWN} more"
    if item.organization:
        text = f"{text} · {item.organization}" if text else item.organization
    return text


def plural(count: int, word: str) -> str:
    return f"{count} {word if count == 1 else word + 's'}"


def _facts(item: Item) -> str:
    day = item.listed_on
    parts = [f"{MONTHS[day.month - 1][:3]} {day.day}, {day.year}", source_label(item.source)]
    if item.upvotes:  # "0 upvotes" says nothing (and only Hugging Face counts them)
        parts.append("▲ " + plural(item.upvotes, "upvote"))
    if item.comments:
        parts.append(plural(item.comments, "comment"))
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
    raises and catches an exception per lookup. Not frozen only so that
    :func:`digest.mail.papers.render_papers` can set ``html`` and ``text`` once the blocks are
    rendered (without a ``replace`` per paper); nothing changes a view after that.
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
