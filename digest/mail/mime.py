"""The few pieces of RFC 5322 / 2045 / 2047 that a digest email needs, written straight to text and bytes.

The :mod:`email` package builds a tree, refolds every header through its parser and serialises
through a generator: correct for any message, but costlier than rendering the digest itself
(``bench/email.md``). A digest has a fixed shape (a dozen known headers, two text parts), so these helpers write
that shape directly:

* header lines are folded at spaces to at most 78 characters where the value allows it;
* text from outside (a subject with rules in it, a display name) is written as is when it is
  printable ASCII, else as RFC 2047 base64 encoded-words of whole UTF-8 characters;
* URLs and addresses are never encoded (``List-Unsubscribe`` must stay a bare ``<https://…>``:
  mail providers do not decode encoded-words there);
* the HTML body goes as it is (7-bit: render writes it in ASCII, every other character as a
  character reference), in lines within RFC 5322's 998 octets (:func:`seven_bit_html`). That
  skips encoding two thirds of a message's bytes, and sending them a third larger; base64
  remains for an HTML body that cannot be sent so;
* the text body is base64 in lines of 76 (its template writes "·" and "—", so it is never
  ASCII): :func:`binascii.b2a_base64` is C end to end, and cheaper than quoted-printable.

Nothing here lets a CR or LF from a value into a header: encoded-words carry them as base64, and
values that are written raw are checked.
"""

from __future__ import annotations

import binascii
import re

from digest.errors import HeaderValueError
from digest.mail.html_lines import break_long_lines

MAX_LINE = 78  # RFC 5322's "SHOULD"; the hard limit is 998
MAX_BODY_LINE = 998  # RFC 5322's limit on a line, not counting its CRLF
# An encoded-word is at most 75 characters: "=?utf-8?b?" + base64 + "?=" leaves 63 for base64, so
# 45 bytes of UTF-8 (60 base64 characters) per word.
_WORD_BYTES = 45
_RAW_WORD_MAX = 60  # longer raw words go into encoded-words, which can be folded
_SPECIALS = re.compile(r'[][()<>@,;:\\".]')
_BASE64_LINES = re.compile(rb".{1,76}", re.DOTALL)


def _raw_ok(word: str) -> bool:
    """Printable ASCII without spaces, not mistakable for an encoded-word, short enough to fold around."""
    return 0 < len(word) <= _RAW_WORD_MAX and word.isascii() and word.isprintable() and "=?" not in word


def encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 ``=?utf-8?b?…?=`` words, each holding whole characters."""
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # do not cut a character in two
            end -= 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?=")
        start = end
    return words


def unstructured(text: str) -> list[str]:
    """Words of an unstructured header (Subject): leading plain words raw, the rest encoded.

    Decoders keep the space between a raw word and an encoded-word and drop the spaces between
    encoded-words, so joining the result with single spaces gives back ``text`` exactly.
    """
    words = text.split(" ")
    raw = 0
    while raw < len(words) and _raw_ok(words[raw]):
        raw += 1
    if raw == len(words):
        return words
    return words[:raw] + encoded_words(" ".join(words[raw:]))


def phrase(name: str) -> list[str]:
    """A display name: an atom or quoted-string when it is plain ASCII, else encoded-words.

    Line breaks and other control characters become spaces: readers refuse them in a name.
    """
    if not name.isprintable():
        name = " ".join("".join(c if c.isprintable() else " " for c in name).split())
    if not name:
        return []
    if len(name) <= _RAW_WORD_MAX and name.isascii() and name.isprintable() and "=?" not in name:
        if _SPECIALS.search(name) is None and "  " not in name and name.strip() == name:
            return name.split(" ")
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return encoded_words(name)


def address(name: str | None, addr_spec: str) -> list[str]:
    """``Name <local@domain>`` as header words; the address itself is never encoded."""
    bare(addr_spec, "address")
    words = phrase(name or "")
    return [*words, f"<{addr_spec}>"] if words else [addr_spec]


def bare(value: str, what: str) -> str:
    """``value`` checked for use as is in a header: no line breaks, and it fits in a line."""
    if "\r" in value or "\n" in value:
        raise HeaderValueError(f"{what}: a line break cannot go into a mail header: {value!r}")
    if len(value) > 900:
        raise HeaderValueError(f"{what}: {len(value)} characters is too long for a mail header")
    return value


def header(name: str, words: list[str]) -> str:
    """``Name: words`` folded at spaces so that lines stay within 78 characters where they can; CRLF-terminated."""
    lines = []
    line = name + ":"
    for word in words:
        if len(line) + 1 + len(word) > MAX_LINE and line != name + ":":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def base64_body(data: bytes) -> bytes:
    """``data`` in base64, CRLF-separated lines of 76 characters (RFC 2045), no final line break."""
    return b"\r\n".join(_BASE64_LINES.findall(binascii.b2a_base64(data, newline=False)))


def base64_size(length: int) -> int:
    """How many bytes :func:`base64_body` writes for ``length`` bytes: lines of 76, CRLF between."""
    encoded = (length + 2) // 3 * 4
    return encoded + 2 * max(0, (encoded + 75) // 76 - 1)


def html_part_size(html: bytes, seven_bit: bytes | None) -> int:
    """The bytes the HTML part's body takes on the wire: as :func:`seven_bit_html` made it
    (``seven_bit``), or in base64 when it could not (None). What Gmail's clipping counts."""
    return len(seven_bit) if seven_bit is not None else base64_size(len(html))


def html_part_bound(html: bytes) -> int:
    """At least :func:`html_part_size` of ``html``, for nothing: in 7-bit each byte becomes at most
    two (a line feed, carriage return or space a CRLF), and base64 takes less than that. A digest
    of half the limit or less (most) is measured so, without making the 7-bit body."""
    return 2 * len(html)


def has_long_line(data: bytes, limit: int) -> bool:
    """Whether a line of ``data`` is longer than ``limit``: the last line feed within reach of each
    line's start, one C search per ``limit`` bytes rather than splitting the email into its lines
    (the tests hold it to the split)."""
    start, size = 0, len(data)
    while size - start > limit:
        end = data.rfind(b"\n", start, start + limit + 1)
        if end < 0:
            return True
        start = end + 1
    return False


def seven_bit_html(html: bytes, boundary: bytes = b"", limit: int = MAX_BODY_LINE) -> bytes | None:
    """``html`` as a 7-bit body: CRLF line ends, no line over ``limit`` octets; None if it cannot be.

    Render keeps the layout's lines short (:func:`digest.mail.html_lines.shorten_layout`), so a line
    over the limit is rare (a paper with a very long run of text) and broken at a space where a
    line break means what the space meant (:func:`digest.mail.html_lines.break_long_lines`). A line
    with no such space, non-ASCII bytes, or the multipart ``boundary`` inside: None, and the
    caller sends the part in base64. Carriage returns become line feeds, as an HTML parser reads
    them anyway, so none is left bare. No ``boundary`` (render, measuring the part): not checked.
    No line starts with "From " (mbox delivery rewrites it to ">From ", which breaks a DKIM
    signature): the layout has none, the breaker never makes one, and every value from a feed
    is one line (the sources squash whitespace), so it is not searched for.
    """
    if not html.isascii() or (boundary and boundary in html):
        return None
    if b"\r" in html:
        html = html.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if has_long_line(html, limit):
        folded = break_long_lines(html.split(b"\n"), limit)
        if folded is None:
            return None
        html = b"\n".join(folded)
    return html.replace(b"\n", b"\r\n")
