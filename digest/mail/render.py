"""Render a :class:`Digest` to a subject, an HTML body and a text body. Pure: no I/O per email.

This module puts an email together; the parts are elsewhere in :mod:`digest.mail`: the templates
(:mod:`~digest.mail.templates`), each paper's blocks (:mod:`~digest.mail.papers`, kept per process
by :mod:`~digest.mail.paper_cache`), its vote links (:mod:`~digest.mail.votes`), what an item
shows (:mod:`~digest.mail.views`), escaping (:mod:`~digest.mail.escape`) and the text part's
lines (:mod:`~digest.mail.text_lines`).

Papers are listed in relevance order (see :func:`digest.matching.ranking.rank_entries`); a digest
of more than a few papers opens with its top picks, and ends with the coverage receipt the cycle
gives. An HTML part that would pass Gmail's clipping limit, counted on the bytes sent, keeps the
first papers in full and lists the rest by title with a link to the full digest; so does a
subscriber's own cap on papers per email (``Subscriber.max_papers``), before any size check.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from markupsafe import Markup

from digest.mail.highlight import shorten
from digest.mail.mime import html_part_bound, html_part_size, seven_bit_html
from digest.mail.paper_cache import paper_cache
from digest.mail.templates import email_templates
from digest.mail.text_lines import wrap, wrap_parts
from digest.mail.views import MONTHS, WEEKDAYS, PaperView, plural
from digest.mail.votes import VoteLinks
from digest.models import Digest

# Gmail clips a message whose HTML passes "102 KB" (reports range 102-105 KB): the HTML part is
# kept to this many bytes as sent (CRLF line ends), below the lowest reading of that.
HTML_LIMIT_BYTES = 100_000
SITE_NAME = "Paper digest"  # the default of settings.site_name
TOP_PICKS = 3
TOP_PICKS_FROM = 6  # papers in a digest before it opens with its top picks
PREHEADER_CHARS = 140
OVERFLOW_TITLES = 200  # past this many, the title list ends with "…and N more" (and the online link)
# Invisible filler after the preheader, so inbox previews do not run on into the body text; in
# lines of ten (a line break in it reads as one more blank), so that no line of the email is long.
PREHEADER_PAD = Markup("\n".join(["&#847;&zwnj;&nbsp;" * 10] * 4))


@dataclass(frozen=True, slots=True)
class Links:
    view_online: str
    manage: str
    unsubscribe: str
    # The start of each paper's signed "more like this" / "not for me" link (``…/vote?token=…&p=``;
    # the paper's id and vote follow it: digest.mail.votes); None (a preview, the tests) shows none.
    vote: str | None = None


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


def subject_for(digest: Digest, site_name: str = SITE_NAME) -> str:
    """``12 new papers for “4090”, “video diffusion” · Paper digest``: what and why first, since
    phones cut a subject short, then whose email it is."""
    count = len(digest.entries)
    rules = digest.rules_matched
    shown = ", ".join(f"“{r}”" for r in rules[:3])
    if len(rules) > 3:
        shown += f" and {len(rules) - 3} more"
    return f"{count} new {'paper' if count == 1 else 'papers'} for {shown} · {site_name}"


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
    """The first :data:`TOP_PICKS` papers (the most relevant: see :func:`digest.matching.ranking.rank_key`)
    of a digest of at least :data:`TOP_PICKS_FROM`, so that a long one says first what to read. Each
    links to its block below, or to its page when the size limit left it out."""
    if len(papers) < TOP_PICKS_FROM:
        return []
    return [Pick(p.title, f"#{p.anchor}" if n < full else p.url, p.pick_text) for n, p in enumerate(papers[:TOP_PICKS])]


def _context(
    digest: Digest,
    links: Links,
    papers: list[PaperView],
    site_name: str = SITE_NAME,
    receipt: str = "",
) -> dict[str, Any]:
    """What both templates need that is the same however many papers the size limit leaves in
    full: made once per email (see :func:`_shown` for the rest)."""
    count = len(digest.entries)
    as_of = digest.as_of
    titles = "; ".join(paper.title for paper in papers[:3])
    counts = _rule_counts(digest)
    counts[0] = f"Papers per rule — {counts[0]}"
    footer = f"You get this because {digest.subscriber.email} subscribed to keyword rules on {site_name}."
    return {
        "subject": subject_for(digest, site_name),
        "preheader": shorten(f"{plural(count, 'new paper')}: {titles}", PREHEADER_CHARS),
        "preheader_pad": PREHEADER_PAD,
        "heading": f"{plural(count, 'new paper')} for you",
        "as_of_label": f"{WEEKDAYS[as_of.weekday()]}, {MONTHS[as_of.month - 1]} {as_of.day}, {as_of.year}",
        "intro": " · ".join(counts),
        "intro_wrapped": wrap_parts(counts),
        "notices": digest.notices,
        "receipt": receipt,
        "receipt_wrapped": wrap_parts(receipt.split(" · ")),
        "recipient": digest.subscriber.email,
        "footer_wrapped": wrap(footer, 76, ""),
        "site_name": site_name,
        "view_online_url": links.view_online,
        "manage_url": links.manage,
        "unsubscribe_url": links.unsubscribe,
    }


def _shown(papers: list[PaperView], full: int, listed: int, votes: VoteLinks) -> dict[str, Any]:
    """What the templates need for ``full`` papers shown whole and the next ``listed`` by title."""
    count = len(papers)
    return {
        "top_picks": _top_picks(papers, full),
        # Each paper's block and its vote links, as the HTML part shows them: one string, so that
        # a render again for the size limit costs a join per paper rather than a template loop.
        "papers_html": "".join(_joined(papers[:full], votes.html(full))),
        "votes": votes.first(full),  # by paper, as "numbered"
        # The text part's papers after their numbers, "1.  " and "10. " alike four columns wide (see
        # wrap); paired here, as Jinja's loop.index costs a loop object per email.
        "numbered": list(zip(_numbers(full), papers[:full], strict=True)),
        "overflow": papers[full : full + listed],
        "overflow_heading": f"{plural(count - full, 'more paper')}, by title",
        "overflow_unlisted": count - full - listed,
    }


def _joined(papers: list[PaperView], votes: list[str]) -> list[str]:
    """Each paper's block followed by its vote links' HTML (empty when it has none)."""
    return [paper.html + vote for paper, vote in zip(papers, votes, strict=True)]


def _cut(size: int, limit: int, full: int, listed: int, count: int) -> tuple[int, int]:
    """Papers shown in full and listed by title for an HTML part of ``size`` bytes to fit ``limit``:
    the papers in full cut in proportion to the excess, then the titles."""
    excess = size - limit
    if full > 0:
        full = max(0, full - excess // max(1, size // full) - 1)
        return full, min(count - full, OVERFLOW_TITLES)
    return full, max(0, listed - excess // max(1, size // listed) - 1)


def _capped(count: int, max_papers: int | None) -> tuple[int, int]:
    """Papers in full and listed by title before the size check: the subscriber's cap
    (``Subscriber.max_papers``) in full, the rest by title as on a big day."""
    full = count if max_papers is None else min(count, max(1, max_papers))
    return full, min(count - full, OVERFLOW_TITLES)


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
    line ends, one byte a line more than the text the templates write, enough to take a long day
    past Gmail's clip while the text is under it; a digest whose bound
    (:func:`digest.mail.mime.html_part_bound`) is under the limit is not measured further. Usually
    one Jinja render of each template; past the limit, a few more of the HTML (:func:`_cut`). At
    most :data:`OVERFLOW_TITLES` are listed by title, then "…and N more" and the link to the
    full digest online. ``receipt`` is the coverage line the digest ends with.
    """
    templates = email_templates()
    papers = paper_cache(digest.subscriber.layout).views(digest.entries)
    votes = VoteLinks(links.vote, digest.entries)
    full, listed = _capped(len(papers), digest.subscriber.max_papers)
    context = _context(digest, links, papers, site_name, receipt)
    while True:
        context.update(_shown(papers, full, listed, votes))
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
        full, listed = _cut(size, html_limit, full, listed, len(papers))
    return RenderedDigest(
        subject=context["subject"],
        html=html,
        text=templates.text.render(context),
        preheader=context["preheader"],
        papers_in_full=full,
        html_ascii=html_ascii,
        html_wire=wire or b"",
    )
