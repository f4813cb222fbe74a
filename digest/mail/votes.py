"""Each paper's "more like this" / "not for me" links in an email, made from the email's one vote
link start (``…/vote?token=…&p=``, :func:`digest.cycle.links.digest_links`): the paper's id and
``&v=1`` or ``&v=-1`` go after it, unsigned (why: :mod:`digest.cycle.links`).

A feed's paper ids (``name:`` + the entry's guid or link) run to hundreds of characters: the vote
page takes any id up to :data:`MAX_VOTE_PAPER_CHARS` and any link up to :data:`MAX_VOTE_URL_CHARS`
(within one 998-octet line of the HTML part with its tag and ``&amp;``s, so the email still goes
7-bit); a paper past either gets no vote links rather than links that cannot work.

Made for the papers shown in full only, once per email however often the size limit renders it
again, and escaped for the HTML here: the start once per email; a paper's quoted id holds nothing
HTML gives a meaning to. The layout writes them without autoescape, as it does the paper blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import quote

from digest.mail.escape import escaped
from digest.mail.templates import PAPER_SEPARATOR, email_templates
from digest.models import DigestEntry

MAX_VOTE_PAPER_CHARS = 1000  # a paper id a vote link may name (the vote page's bound, digest.web.vote)
MAX_VOTE_URL_CHARS = 900  # a vote link, base URL and token: one line of the HTML part with its tag
LONGEST_VOTE = "&v=-1"  # what follows the paper's id in its longer link


class Vote(NamedTuple):
    """A paper's two vote links: as the text part shows them, and escaped for the HTML part."""

    more: str
    less: str
    more_html: str
    less_html: str


def quoted_paper(paper: str) -> str | None:
    """``paper`` as its vote links carry it (letters, digits, ``%``, ``_.-~:/`` only), or None when
    no vote link may name it (a lone surrogate)."""
    try:
        return quote(paper, safe=":/")
    except UnicodeEncodeError:  # a lone surrogate: no URL can carry it
        return None


def paper_vote(start: str, start_html: str, paper: str) -> Vote | None:
    """``paper``'s links after ``start`` (``start_html``: the same, escaped), or None when one
    would pass :data:`MAX_VOTE_URL_CHARS`."""
    if len(paper) > MAX_VOTE_PAPER_CHARS:
        return None
    quoted = quoted_paper(paper)
    if quoted is None or len(start) + len(quoted) + len(LONGEST_VOTE) > MAX_VOTE_URL_CHARS:
        return None
    return Vote(
        f"{start}{quoted}&v=1",
        f"{start}{quoted}&v=-1",
        f"{start_html}{quoted}&amp;v=1",
        f"{start_html}{quoted}&amp;v=-1",
    )


class VoteLinks:
    """One email's vote links by paper, in its papers' order; None where a paper has none.
    ``start`` None (a preview, the tests) shows no vote links."""

    def __init__(self, start: str | None, entries: Sequence[DigestEntry]) -> None:
        self.start = start
        self.start_html = escaped(start) if start is not None else ""
        self.entries = entries
        self.made: list[Vote | None] = []
        self.made_html: list[str] = []

    def first(self, count: int) -> list[Vote | None]:
        """The first ``count`` papers' links."""
        if self.start is None:
            return []
        while len(self.made) < count:
            self.made.append(paper_vote(self.start, self.start_html, self.entries[len(self.made)].item.id))
        return self.made[:count]

    def html(self, count: int) -> list[str]:
        """The HTML of the first ``count`` papers' links, for all papers in one template call; an
        empty string each when there are none."""
        if self.start is None:
            return [""] * count
        if len(self.made_html) < count:
            votes = self.first(count)[len(self.made_html) :]
            made = email_templates().votes.render(votes=votes).split(PAPER_SEPARATOR)
            if len(made) != len(votes) + 1:  # the separator is the template's alone; never expected
                raise RuntimeError(f"rendered {len(made) - 1} papers' vote links for {len(votes)} papers")
            self.made_html += made[:-1]
        return self.made_html[:count]
