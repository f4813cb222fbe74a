"""Render a :class:`Digest` to a subject, an HTML body and a text body. Pure: no I/O per email.

The MJML layout (``templates/email/digest.mjml``, with Jinja tags inside) is compiled to HTML once
per process; each email is then only a Jinja render of that HTML, which is about four times
cheaper than running MJML per email. Papers are listed in relevance order (see
:func:`rank_entries`). An HTML body that would pass Gmail's 102 KB clipping limit keeps the first
papers in full and lists the rest by title with a link to the full digest online.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from mjml import mjml2html

from digest.highlight import mark, shorten, spans_for
from digest.models import Digest, DigestEntry

HTML_LIMIT_BYTES = 100 * 1024  # Gmail clips at 102 KB; keep a margin for headers it counts
ABSTRACT_CHARS = 420
AUTHORS_SHOWN = 5
SITE_NAME = "digest"
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
    text_source = (base / "digest.txt.j2").read_text(encoding="utf-8")
    return html_env.from_string(html_source), text_env.from_string(text_source)


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


def source_label(source: str) -> str:
    """How a source is named in the email: built-in kinds by their site, feeds by their own name."""
    return SOURCE_LABELS.get(source, source)


def _facts(entry: DigestEntry) -> str:
    item = entry.item
    parts = [item.listed_on.strftime("%b %-d, %Y"), source_label(item.source)]
    if item.upvotes or item.source == "hf_papers":  # only Hugging Face counts upvotes; "▲ 0" elsewhere misleads
        parts.append(f"▲ {item.upvotes} {'upvote' if item.upvotes == 1 else 'upvotes'}")
    if item.comments:
        parts.append(f"{item.comments} {'comment' if item.comments == 1 else 'comments'}")
    if item.categories:
        parts.append(", ".join(item.categories[:CATEGORIES_SHOWN]))
    return " · ".join(parts)


def _paper_context(entry: DigestEntry) -> dict[str, Any]:
    item = entry.item
    highlights = [h for m in entry.matches for h in m.highlights]
    abstract = shorten(item.abstract, ABSTRACT_CHARS)
    cut = len(abstract) < len(item.abstract)
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
        "abstract_cut": cut,
    }


def _context(digest: Digest, links: Links, full: int) -> dict[str, Any]:
    entries = digest.entries
    count = len(entries)
    subject = subject_for(digest)
    rules = digest.rules_matched
    preheader = f"{count} new {'paper' if count == 1 else 'papers'}: " + "; ".join(e.item.title for e in entries[:3])
    return {
        "subject": subject,
        "preheader": shorten(preheader, 140),
        "heading": f"{count} new {'paper' if count == 1 else 'papers'} for you",
        "as_of_label": _as_of_label(digest.as_of),
        "intro": "Matching your rules: " + ", ".join(rules) + ".",
        "notices": digest.notices,
        "papers": [_paper_context(e) for e in entries[:full]],
        "overflow": [{"title": e.item.title, "url": e.item.url} for e in entries[full:]],
        "recipient": digest.subscriber.email,
        "site_name": SITE_NAME,
        "view_online_url": links.view_online,
        "manage_url": links.manage,
        "unsubscribe_url": links.unsubscribe,
    }


def _as_of_label(day: date) -> str:
    return day.strftime("%A, %B %-d, %Y")


def render_digest(digest: Digest, links: Links, html_limit: int = HTML_LIMIT_BYTES) -> RenderedDigest:
    html_template, text_template = _templates()
    full = len(digest.entries)
    while True:
        context = _context(digest, links, full)
        html = html_template.render(context)
        size = len(html.encode("utf-8"))
        if size <= html_limit or full == 0:
            break
        # Shrink in proportion to the excess, at least by one paper, and try again.
        per_paper = max(1, size // max(full, 1))
        full = max(0, min(full - 1, full - (size - html_limit) // per_paper - 1))
    text = text_template.render(context)
    return RenderedDigest(
        subject=context["subject"], html=html, text=text, preheader=context["preheader"], papers_in_full=full
    )
