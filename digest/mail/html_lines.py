"""Long lines of HTML broken at spaces where a line break reads exactly as the space did. Pure.

An email part sent as it is (7-bit) may not have a line over 998 octets, and MJML writes its
layout in long lines. A space and a line break are the same to an HTML reader in two places:
in text (outside ``<pre>``, which digest's layout never uses), and between the attributes of a
tag. Never inside an attribute value, and never inside a comment: Outlook reads the markup of
``<!--[if mso]>…<![endif]-->`` in its own way, so it goes on the wire as MJML wrote it.

Works on the layout as compiled (with Jinja tags in it) and on a rendered email alike: text
from a feed reaches the HTML with ``<``, ``>`` and quotes escaped, so the bare ones are markup.
"""

from __future__ import annotations

from collections.abc import Iterable


def break_long_lines(lines: Iterable[bytes], limit: int) -> list[bytes] | None:
    """``lines`` with each longer than ``limit`` broken into several, or None if one cannot be."""
    folded: list[bytes] = []
    for line in lines:
        pieces = _fold(line, limit, in_text=True, strict=True)
        if pieces is None:
            return None
        folded.extend(pieces)
    return folded


def shorten_layout(source: str, limit: int) -> str:
    """The compiled layout with its lines past ``limit`` broken between attributes (never in its
    text, which holds Jinja tags), as near the limit as they can be. A run of markup with no such
    space, as between two comments, stays whole: an email whose line is still too long is broken
    there or sent in base64 (see :func:`digest.mail.mime.seven_bit_html`)."""
    lines: list[bytes] = []
    for line in source.encode("utf-8").split(b"\n"):
        lines.extend(_fold(line, limit, in_text=False, strict=False) or [line])
    return b"\n".join(lines).decode("utf-8")  # spaces are ASCII: no character is cut


def _fold(line: bytes, limit: int, in_text: bool, strict: bool) -> list[bytes] | None:
    """``line`` in pieces of at most ``limit``; where no space before the limit can be broken,
    None if ``strict``, else broken at the first one after it (or left whole)."""
    pieces = []
    while len(line) > limit:
        cut = _line_break(line, limit, in_text)
        if cut < 0 and not strict:
            cut = _first_break(line, limit)
        if cut < 0:
            if strict:
                return None
            break
        pieces.append(line[:cut])
        line = line[cut + 1 :]
    pieces.append(line)
    return pieces


def _line_break(line: bytes, limit: int, in_text: bool) -> int:
    """The last space in ``line[:limit + 1]`` (not the first byte) that a line break can take the
    place of, or -1."""
    cut = line.rfind(b" ", 1, limit + 1)
    while cut > 0 and not _breakable(line, cut, in_text):
        cut = line.rfind(b" ", 1, cut)
    return cut


def _first_break(line: bytes, start: int) -> int:
    """The first space from ``start`` on that a line break can take the place of between
    attributes, or -1."""
    cut = line.find(b" ", start)
    while cut > 0 and not _breakable(line, cut, in_text=False):
        cut = line.find(b" ", cut + 1)
    return cut


def _breakable(line: bytes, cut: int, in_text: bool) -> bool:
    """Whether a line break can stand for the space at ``cut``.

    A space is inside a tag when the next of ``<`` and ``>`` after it is ``>``; in a tag, counting
    the quotes since the tag opened says whether it stands between attributes or inside a value.
    Not before a ".": a line starting with one would cost the mailer a dot-stuffing pass. Not
    before "From ": mbox delivery writes such a line as ">From ", which breaks a DKIM signature.
    """
    if line[cut + 1 : cut + 2] == b"." or line.startswith(b"From ", cut + 1) or _in_comment(line, cut):
        return False
    closes, opens = line.find(b">", cut), line.find(b"<", cut)
    if closes < 0 or 0 <= opens < closes:  # in text
        return in_text
    opened = line.rfind(b"<", 0, cut)  # in a tag: one that opened on this line, not a comment
    return opened >= 0 and line[opened + 1 : opened + 2] != b"!" and line.count(b'"', opened, cut) % 2 == 0


def _in_comment(line: bytes, at: int) -> bool:
    """Whether ``at`` is inside a comment that opens or closes on this line."""
    opened = line.rfind(b"<!--", 0, at)
    if opened >= 0 and line.find(b"-->", opened + 4, at) < 0:
        return True
    closes = line.find(b"-->", at)
    return closes >= 0 and not 0 <= line.find(b"<!--", at) < closes
