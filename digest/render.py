"""Render a :class:`Digest` to a subject, an HTML body and a text body. Pure: no I/O per email.

The MJML layout (``templates/email/digest.mjml``, with Jinja tags inside) is compiled to HTML once
per process; each email is then only a Jinja render of that HTML, which is about four times
cheaper than running MJML per email. Papers are listed in relevance order (see
:func:`rank_entries`). An HTML body that would pass Gmail's 102 KB clipping limit keeps the first
papers in full and lists the rest by title with a link to the full digest online.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from mjml import mjml2html

from digest.highlight import mark, shorten, spans_for
from digest.models import Digest, DigestEntry

HTML_LIMIT_BYTES = 100 * 1024  # Gmail clips at 102 KB; keep a margin for headers it counts
ABSTRACT_CHARS = 420
AUTHORS_SHOWN = 5
SITE_NAME = "digest"
PREHEADER_CHARS = 140
OVERFLOW_TITLES = 200  # past this many, the title list ends with "…and N more" (and the online link)
# Invisible filler after the preheader, so inbox previews do not run on into the body text.
PREHEADER_PAD = Markup("&#847;&zwnj;&nbsp;" * 40)
SOURCE_LABELS = {"hf_papers": "Hugging Face", "arxiv": "arXiv"}
CATEGORIES_SHOWN = 3


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


def templates_dir() -> Path:
    return Path(str(resources.files("digest.templates")))


@lru_cache(maxsize=1)
def _templates() -> tuple[jinja2.Template, jinja2.Template]:
    """Compile the MJML layout once per process, and load the text template."""
    base = templates_dir() / "email"
    html_source = mjml2html((base / "digest.mjml").read_text(encoding="utf-8"), disable_comments=True)
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    text_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text_env.filters["wrap"] = wrap
    text_source = (base / "digest.txt.j2").read_text(encoding="utf-8")
    return html_env.from_string(html_source), text_env.from_string(text_source)


def wrap(text: str, width: int = 73, indent: str = "   ") -> str:
    """Greedy word wrap for the text part, continuation lines indented.

    Jinja's ``wordwrap`` goes through :mod:`textwrap`, which took most of a render's time; this
    plain loop does the same job for prose at a fraction of the cost. A word longer than the line
    stays whole (a URL must not be cut).
    """
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


def rank_entries(entries: list[DigestEntry]) -> list[DigestEntry]:
    """Most relevant first: more distinct rules matched, then a title match, then upvotes, then title."""
    return sorted(
        entries,
        key=lambda e: (
            -len({m.rule for m in e.matches}),
            not any(m.in_title for m in e.matches),
            -e.item.upvotes,
            e.item.title.casefold(),
        ),
    )


def subject_for(digest: Digest) -> str:
    count = len(digest.entries)
    rules = digest.rules_matched
    shown = ", ".join(f"“{r}”" for r in rules[:3])
    if len(rules) > 3:
        shown += f" and {len(rules) - 3} more"
    return f"{count} new {'paper' if count == 1 else 'papers'} for {shown}"


def _byline(entry: DigestEntry) -> str:
    authors = list(entry.item.authors)
    text = ", ".join(authors[:AUTHORS_SHOWN])
    if len(authors) > AUTHORS_SHOWN:
        text += f" and {len(authors) - AUTHORS_SHOWN} more"
    if entry.item.organization:
        text = f"{text} · {entry.item.organization}" if text else entry.item.organization
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word if count == 1 else word + 's'}"


def source_label(source: str) -> str:
    """How a source is named in the email: built-in kinds by their site, feeds by their own name."""
    return SOURCE_LABELS.get(source, source)


def _facts(entry: DigestEntry) -> str:
    item = entry.item
    day = item.listed_on
    parts = [f"{day:%b} {day.day}, {day.year}", source_label(item.source)]
    if item.upvotes or item.source == "hf_papers":  # only Hugging Face counts upvotes; "▲ 0" elsewhere misleads
        parts.append("▲ " + _plural(item.upvotes, "upvote"))
    if item.comments:
        parts.append(_plural(item.comments, "comment"))
    if item.categories:
        parts.append(", ".join(item.categories[:CATEGORIES_SHOWN]))
    return " · ".join(parts)


def _paper_context(entry: DigestEntry) -> dict[str, Any]:
    item = entry.item
    highlights = [h for m in entry.matches for h in m.highlights]
    abstract = shorten(item.abstract, ABSTRACT_CHARS)
    abstract_spans = [(s, e) for s, e in spans_for(highlights, "abstract") if e <= len(abstract)]
    rules = []
    for match in entry.matches:
        where = sorted({h.field for h in match.highlights}, key=lambda f: f != "title")
        rules.append(f"{match.rule} ({', '.join(where)})" if where else match.rule)
    return {
        "title": item.title,
        "title_html": mark(item.title, spans_for(highlights, "title")),
        "url": item.url,
        "byline": _byline(entry),
        "facts": _facts(entry),
        "github_repo": item.github_repo,
        "rules": rules,
        "rules_text": ", ".join(rules),
        "abstract_html": mark(abstract, abstract_spans),
        "abstract_text": abstract,
        "abstract_cut": len(abstract) < len(item.abstract),
    }


def _rule_counts(digest: Digest) -> str:
    counts: dict[str, int] = dict.fromkeys(digest.rules_matched, 0)
    for entry in digest.entries:
        for rule in {m.rule for m in entry.matches}:
            counts[rule] += 1
    return " · ".join(f"“{rule}”: {count}" for rule, count in counts.items())


def _context(digest: Digest, links: Links, papers: list[dict[str, Any]], full: int, listed: int) -> dict[str, Any]:
    """Everything both templates need; ``full`` papers shown whole, the next ``listed`` by title."""
    count = len(digest.entries)
    overflow = [{"title": p["title"], "url": p["url"]} for p in papers[full : full + listed]]
    titles = "; ".join(e.item.title for e in digest.entries[:3])
    return {
        "subject": subject_for(digest),
        "preheader": shorten(f"{_plural(count, 'new paper')}: {titles}", PREHEADER_CHARS),
        "preheader_pad": PREHEADER_PAD,
        "heading": f"{_plural(count, 'new paper')} for you",
        "as_of_label": f"{digest.as_of:%A, %B} {digest.as_of.day}, {digest.as_of.year}",
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
    html_template, text_template = _templates()
    papers = [_paper_context(e) for e in digest.entries]
    full, listed = len(papers), 0
    while True:
        context = _context(digest, links, papers, full, listed)
        html = html_template.render(context)
        size = len(html.encode("utf-8"))
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
    text = text_template.render(context)
    return RenderedDigest(
        subject=context["subject"], html=html, text=text, preheader=context["preheader"], papers_in_full=full
    )
