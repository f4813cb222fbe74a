"""Text from the outside world as the email's HTML writes it: escaped, and in ASCII.

One escape for the whole email: :func:`digest.mail.highlight.escape_html` (what markupsafe's
``escape`` and so Jinja's autoescape write), then every character past ASCII as a character reference
(``&#233;``), so the HTML part can go in 7-bit as it is (see ``RenderedDigest.html_bytes``).
"""

from __future__ import annotations

from markupsafe import Markup

from digest.mail.highlight import escape_html


def html_in_ascii(html: str) -> str:
    """HTML, escaped already, in ASCII: other characters as character references (``&#233;``)."""
    return html if html.isascii() else html.encode("ascii", "xmlcharrefreplace").decode("ascii")


def escaped(text: str) -> str:
    """``text`` escaped and in ASCII, as a plain ``str``: the paper blocks are written from such
    values without autoescape (see ``digest.mail.views.PaperHtml``)."""
    return html_in_ascii(escape_html(text))


def ascii_html(value: object) -> object:
    """Jinja's ``finalize`` hook for the HTML templates: a value escaped as autoescape would, and
    in ASCII.

    Per value rather than once over the whole email: encoding a whole string takes a slow path
    as soon as one character is past Latin-1, while a value that is ASCII already costs one
    flag lookup.
    """
    if not isinstance(value, str) or value.isascii():
        return value
    return Markup(html_in_ascii(str(value) if isinstance(value, Markup) else escape_html(value)))
