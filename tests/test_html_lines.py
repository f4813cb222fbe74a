"""Long HTML lines broken only where a line break reads as the space it replaces, and the 7-bit
HTML body built on that: checked on generated markup and on the real layout."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.mail import mime
from digest.mail.html_lines import shorten_layout
from digest.mail.render import render_digest
from digest.models import Digest
from tests.email_fixtures import LINKS, hostile_digest, html_reading, huge_digest, sample_digest

_WORDS = st.sampled_from(["video", "diffusion", "4090", "&amp;", "&#233;", ".", "a.b", "x"])
_TEXT = st.lists(_WORDS, min_size=1, max_size=12).map(" ".join)
_ATTRS = st.lists(st.tuples(st.sampled_from(["class", "style", "title", "href"]), _TEXT), max_size=3)
_TAG = st.tuples(st.sampled_from(["p", "a", "td", "mark"]), _ATTRS).map(
    lambda t: f"<{t[0]}" + "".join(f' {name}="{value}"' for name, value in t[1]) + ">"
)
_COMMENT = _TEXT.map(lambda text: f"<!--[if mso | IE]><table {text}><![endif]-->")
_HTML = st.lists(st.one_of(_TEXT, _TAG, _COMMENT, st.sampled_from(["</p>", "\n", "\r\n", " ", "\r"])), max_size=40).map(
    "".join
)


def only_spaces_became_line_breaks(before: bytes, after: bytes) -> bool:
    return len(before) == len(after) and all(
        a == b or (a, b) == (ord(" "), ord("\n")) for a, b in zip(before, after, strict=True)
    )


@settings(max_examples=300, deadline=None)
@given(html=_HTML, limit=st.integers(min_value=20, max_value=120))
def test_7bit_html_only_turns_spaces_into_line_breaks_where_they_read_the_same(html: str, limit: int) -> None:
    data = html.encode("ascii")
    body = mime.seven_bit_html(data, b"=_boundary", limit)
    read_as = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if body is None:  # some line had no space that could take a break
        assert max(map(len, read_as.split(b"\n"))) > limit
        return
    lines = body.split(b"\r\n")
    assert all(len(line) <= limit for line in lines) and b"\r" not in b"".join(lines)
    assert not any(line.startswith(b".") for line in lines[1:]) or any(
        line.startswith(b".") for line in read_as.split(b"\n")[1:]
    )
    unfolded = b"\n".join(lines)
    assert only_spaces_became_line_breaks(read_as, unfolded)
    assert html_reading(unfolded.decode()) == html_reading(read_as.decode())


def test_7bit_html_refuses_what_7bit_cannot_carry() -> None:
    assert mime.seven_bit_html("é".encode(), b"=_b") is None
    assert mime.seven_bit_html(b"<p>--=_b</p>", b"=_b") is None
    assert mime.seven_bit_html(b"<p>a\nb</p>", b"=_b") == b"<p>a\r\nb</p>"


_JINJA = st.sampled_from(["{{ heading }}", "{% if x %}", "{% endif %}", "{{ paper.title }}"])


@settings(max_examples=300, deadline=None)
@given(source=st.lists(st.one_of(_TEXT, _TAG, _COMMENT, _JINJA, st.just("\n")), max_size=40).map("".join))
def test_the_layout_is_broken_between_attributes_only(source: str) -> None:
    """Text (where the layout's Jinja tags are) and comments are left whole; the rest of a long
    line is broken as near the limit as a tag allows."""
    shortened = shorten_layout(source, 30)
    assert only_spaces_became_line_breaks(source.encode(), shortened.encode())
    assert html_reading(shortened) == html_reading(source)
    for jinja in ("{{ heading }}", "{% if x %}", "{% endif %}", "{{ paper.title }}"):
        assert shortened.count(jinja) == source.count(jinja)


@pytest.mark.parametrize("make", [sample_digest, hostile_digest, huge_digest])
def test_digests_go_as_7bit_without_breaking_a_line(make: Callable[[], Digest]) -> None:
    """The usual email needs no line broken at send time: only the length check runs."""
    html = render_digest(make(), LINKS).html_bytes()
    assert max(len(line) for line in html.split(b"\n")) <= mime.MAX_BODY_LINE
    body = mime.seven_bit_html(html, b"=_boundary")
    assert body == html.replace(b"\n", b"\r\n")
