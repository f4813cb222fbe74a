"""The email's templates: the MJML layout compiled to HTML once per process, and the text template.

Each email is then a Jinja render of that HTML, much cheaper than running MJML per email.
The block of one paper (between ``{# paper #}`` and ``{# /paper #}``, in each layout and in
the text template) becomes a template of its own, rendered once per paper and matches
(:mod:`digest.mail.paper_cache`); each email then inserts the cached blocks, which gives the same
output as one template would. In the HTML layout, the whole loop over papers is cut out: each
paper's vote links (between ``{# votes #}`` and ``{# /votes #}``) become a template of their own
too (:mod:`digest.mail.votes`), and the email's template gets the papers as one string.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
from mjml import mjml2html

from digest.mail.escape import ascii_html
from digest.mail.html_lines import shorten_layout
from digest.mail.text_lines import wrap
from digest.models import LAYOUTS

# The layout's lines are kept this short, leaving room for what Jinja puts in them (see mime).
LAYOUT_LINE = 250


def templates_dir() -> Path:
    return Path(str(resources.files("digest.templates")))


# Mark the block of one paper in the layout, in each layout; see :func:`email_templates`.
PAPER_START, PAPER_END = "{# paper #}", "{# /paper #}"
COMPACT_START, COMPACT_END = "{# compact #}", "{# /compact #}"
# And, in the HTML layout, each paper's vote links after its block (per subscriber, not cached).
VOTES_START, VOTES_END = "{# votes #}", "{# /votes #}"
PAPER_LOOP, LOOP_END = "{% for paper in papers %}", "{% endfor %}"


# Ends each paper's block in the output of ``Templates.papers`` (and ``Templates.votes``): "<" from
# a feed is always escaped, so only the template itself can write this.
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
    # The email around its papers, given them as one string (``papers_html``: each paper's block
    # and vote links), so that rendering it again for the size limit costs little per paper.
    html: jinja2.Template
    text: jinja2.Template
    blocks: dict[str, Blocks]  # by layout
    # Each paper's vote links (``Vote`` or None), every paper's ending with PAPER_SEPARATOR.
    votes: jinja2.Template


def _paper_block(
    source: str, where: str, marks: tuple[str, str] = (PAPER_START, PAPER_END), what: str = "the paper block"
) -> tuple[str, str, str]:
    """``source`` split around the part marked by ``marks``: by default the paper block, between
    ``{# paper #}`` and ``{# /paper #}``."""
    head, start, rest = source.partition(marks[0])
    paper_source, end, tail = rest.partition(marks[1])
    if not (start and end):
        raise RuntimeError(f"{where}: {what} lost its {marks[0]} {marks[1]} marks")
    return head, paper_source, tail


def _layout_blocks(source: str, where: str) -> tuple[str, dict[str, str], str]:
    """``source`` split around its two paper blocks, full then compact, which stand side by side
    in the loop over papers: the head before them, each block's source, the tail after them."""
    head, full, rest = _paper_block(source, where)
    between, compact, tail = _paper_block(rest, where, (COMPACT_START, COMPACT_END))
    if between.strip():
        raise RuntimeError(f"{where}: nothing may stand between the paper block and the compact one")
    return head, {"full": full, "compact": compact}, tail


def _html_parts(source: str, where: str) -> tuple[str, dict[str, str], str, str]:
    """The HTML layout split around its loop over papers: the head before the loop, each paper
    block's source, the vote links' source, and the tail after the loop."""
    head, paper_sources, tail = _layout_blocks(source, where)
    votes_start, votes, rest = _paper_block(tail, where, (VOTES_START, VOTES_END), "the vote links' part")
    if not head.endswith(PAPER_LOOP) or votes_start or not rest.startswith(LOOP_END):
        raise RuntimeError(f"{where}: the loop over papers must hold the paper blocks and the votes, and nothing else")
    return head.removesuffix(PAPER_LOOP), paper_sources, votes, rest.removeprefix(LOOP_END)


def layout_html() -> str:
    """The MJML layout compiled to HTML, with its Jinja tags: the source of the HTML templates."""
    source = (templates_dir() / "email" / "digest.mjml").read_text(encoding="utf-8")
    html_source = mjml2html(source, disable_comments=True)
    # MJML starts a line of its Outlook CSS with "."; indented, no line of an email does, and the
    # mailer need not dot-stuff the message (see digest.mail.mailer). Its long lines are
    # broken between attributes, so that an email's HTML can go in 7-bit as it is (see mime).
    html_source = shorten_layout(html_source.replace("\n.", "\n ."), LAYOUT_LINE)
    # The HTML is written in ASCII (see RenderedDigest.html_bytes): the layout's own characters
    # here, once (they are all in text, none in <style> or a comment), and every value as Jinja
    # writes it (ascii_html, or escaped for the paper blocks).
    return html_source.encode("ascii", "xmlcharrefreplace").decode("ascii")


@lru_cache(maxsize=1)
def email_templates() -> Templates:
    """Compile the MJML layout once per process, and load the text template.

    A paper's block sits inside an ``mj-text``, whose HTML MJML copies as it is, so it can be cut
    out of the compiled layout.
    """
    base = templates_dir() / "email"
    head, paper_sources, votes, tail = _html_parts(layout_html(), "templates/email/digest.mjml")
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=ascii_html)
    # The paper block gets PaperHtml values, every one escaped and in ASCII already.
    block_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    text_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text_env.filters["wrap"] = wrap
    text_head, text_sources, text_tail = _layout_blocks(
        (base / "digest.txt.j2").read_text(encoding="utf-8"), "templates/email/digest.txt.j2"
    )
    return Templates(
        # The papers are escaped already (PaperHtml, VoteLinks), and in ASCII: written as they are,
        # not through autoescape (a Markup made per paper and email) or ascii_html.
        html=html_env.from_string(head + "{% autoescape false %}{{ papers_html }}{% endautoescape %}" + tail),
        text=text_env.from_string(text_head + "{{ paper.text }}" + text_tail),
        blocks={
            layout: Blocks(
                papers=block_env.from_string(
                    "{% for paper in papers %}" + paper_sources[layout] + PAPER_SEPARATOR + "{% endfor %}"
                ),
                text_papers=text_env.from_string(
                    "{% for paper in papers %}" + text_sources[layout] + TEXT_PAPER_SEPARATOR + "{% endfor %}",
                ),
                text_paper=text_env.from_string(text_sources[layout]),
            )
            for layout in LAYOUTS
        },
        votes=block_env.from_string("{% for vote in votes %}" + votes + PAPER_SEPARATOR + "{% endfor %}"),
    )
