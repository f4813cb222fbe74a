"""A subscriber's matched papers as an Atom 1.0 document (RFC 4287): pure, papers in, bytes out.

Each entry says why the paper is there as the email does: the rules it matched and where
(:mod:`digest.mail.papers`), the matched words (:func:`digest.matching.explain.matched_words`),
the abstract's excerpt with those words marked, and the snippets the excerpt leaves out. The
HTML goes in ``content type="html"``, that is escaped once more as XML text: the document is
written by :mod:`xml.etree.ElementTree`, which escapes every value, so a title holding ``]]>`` or
``<script>`` is text. Characters XML 1.0 cannot carry at all (most control characters, lone
surrogates, U+FFFE/U+FFFF) are dropped from every value first: one would make the whole feed
unreadable to a conforming parser.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from xml.etree import ElementTree

from digest.mail.views import PaperView
from digest.matching.explain import matched_words
from digest.models import DigestEntry

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
AUTHORS_LISTED = 10  # atom:author per entry; the byline in the content names the first five anyway
# Entry ids are the same for a paper whatever the feed, the address it is served at or the day.
PAPER_NAMESPACE = uuid.UUID("6f1d2a0e-5b8c-4d3e-9a7f-2c4b8e1d0f35")

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` without the characters an XML 1.0 document cannot hold, even escaped."""
    return _NOT_XML.sub("", text)


@dataclass(frozen=True, slots=True)
class FeedHead:
    """The feed's own elements."""

    id: str  # an IRI, the same for as long as the feed's address is
    title: str
    subtitle: str
    self_url: str
    home_url: str
    site_name: str
    updated_if_empty: datetime  # an empty feed still needs an atom:updated


def paper_id(item_id: str) -> str:
    return f"urn:uuid:{uuid.uuid5(PAPER_NAMESPACE, item_id)}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def stamp(moment: datetime) -> str:
    """RFC 3339 in UTC, as atom:updated wants it (``2026-11-20T00:00:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add(parent: ElementTree.Element, tag: str, text: str | None = None, **attributes: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag, {name: xml_text(value) for name, value in attributes.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def content_html(paper: PaperView) -> str:
    """The entry's HTML: what the email's block says, from the same values (each escaped already)."""
    html = paper.escaped
    parts = [f"<p>{html.facts}" + (f" · {html.byline}" if html.byline else "") + "</p>"]
    parts.append("<p><b>Why it matched:</b> " + ", ".join(html.rules) + "</p>")
    if html.abstract or html.summary:  # the compact layout's one line instead of the abstract
        parts.append(f"<p>{html.abstract or html.summary}</p>")
    parts.extend(f"<p>{snippet}</p>" for snippet in html.snippets)
    links = [f'<a href="{html.url}">Read the paper</a>']
    if html.github_repo:
        links.append(f'<a href="{html.github_repo}">Code on GitHub</a>')
    parts.append("<p>" + " · ".join(links) + "</p>")
    return "\n".join(parts)


def _entry(feed: ElementTree.Element, entry: DigestEntry, paper: PaperView) -> None:
    item = entry.item
    element = _add(feed, "entry")
    _add(element, "id", paper_id(item.id))
    _add(element, "title", paper.title, type="text")
    _add(element, "link", rel="alternate", type="text/html", href=item.url)
    if item.github_repo:
        _add(element, "link", rel="related", href=item.github_repo, title="Code on GitHub")
    when = stamp(day_start(item.listed_on))
    _add(element, "published", when)
    _add(element, "updated", when)
    for name in [a for a in item.authors if xml_text(a).strip()][:AUTHORS_LISTED]:
        _add(_add(element, "author"), "name", name)
    for rule in dict.fromkeys(match.rule for match in entry.matches):
        _add(element, "category", term=rule)
    words = matched_words(item, [h for match in entry.matches for h in match.highlights])
    why = "Matched: " + ", ".join(paper.rules) + (f" — {words}" if words else "")
    _add(element, "summary", why, type="text")
    _add(element, "content", content_html(paper), type="html")


def atom_feed(head: FeedHead, entries: Sequence[DigestEntry], papers: Sequence[PaperView]) -> bytes:
    """The Atom document of ``entries`` (in the order given) and their ``papers`` (their views)."""
    # The namespace as a plain attribute, children unqualified: the default namespace without
    # registering a prefix in ElementTree's process-wide table.
    feed = ElementTree.Element("feed", {"xmlns": ATOM_NS})
    _add(feed, "id", head.id)
    _add(feed, "title", head.title, type="text")
    _add(feed, "subtitle", head.subtitle, type="text")
    _add(feed, "link", rel="self", type="application/atom+xml", href=head.self_url)
    _add(feed, "link", rel="alternate", type="text/html", href=head.home_url)
    author = _add(feed, "author")
    _add(author, "name", head.site_name)
    _add(author, "uri", head.home_url)
    _add(feed, "generator", "digest", uri=head.home_url)
    days = [entry.item.listed_on for entry in entries]
    _add(feed, "updated", stamp(day_start(max(days)) if days else head.updated_if_empty))
    for entry, paper in zip(entries, papers, strict=True):
        _entry(feed, entry, paper)
    document: bytes = ElementTree.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document
