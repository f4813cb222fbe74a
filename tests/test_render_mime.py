"""The header and body encoders under the digest email, read back by the standard library's decoders."""

from __future__ import annotations

import base64
import binascii
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import HeaderValueError
from digest.mail import mime


def decoded(words: list[str]) -> str:
    return str(make_header(decode_header(" ".join(words))))


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=300))
def test_encoded_words_are_short_hold_whole_characters_and_read_back(text: str) -> None:
    words = mime.encoded_words(text)
    assert all(len(w) <= 75 and w.startswith("=?utf-8?b?") and w.endswith("?=") for w in words)
    for word in words:  # each one decodes alone: no character is cut between two words
        base64.b64decode(word[10:-2]).decode("utf-8")
    assert decoded(words) == text


def test_a_plain_subject_stays_readable_and_the_rest_is_encoded() -> None:
    assert mime.unstructured("3 new papers for 4090") == ["3", "new", "papers", "for", "4090"]
    words = mime.unstructured("3 new papers for “4090”, “real-time”")
    assert words[:4] == ["3", "new", "papers", "for"] and words[4].startswith("=?utf-8?b?")
    assert decoded(words) == "3 new papers for “4090”, “real-time”"
    # Text that looks like an encoded-word, or holds a line break, is never written raw.
    assert mime.unstructured("1 new paper for =?utf-8?q?x?=")[4].startswith("=?utf-8?b?")
    injected = mime.unstructured("1 new paper\r\nBcc: eve@example.org")
    assert not any("\r" in w or "\n" in w for w in injected)
    assert decoded(injected) == "1 new paper\r\nBcc: eve@example.org"


def test_display_names_are_atoms_quoted_or_encoded() -> None:
    assert mime.phrase("Ada Lovelace") == ["Ada", "Lovelace"]
    assert mime.phrase('Lovelace, Ada "A."') == ['"Lovelace, Ada \\"A.\\""']
    assert mime.phrase("José")[0].startswith("=?utf-8?b?")
    assert mime.phrase("Eve\r\nBcc: x@example.org") == ['"Eve Bcc: x@example.org"']  # a name, not a header
    assert mime.address(None, "ada@example.org") == ["ada@example.org"]
    assert mime.address("\n", "ada@example.org") == ["ada@example.org"]
    assert mime.address("Ada", "ada@example.org") == ["Ada", "<ada@example.org>"]


def test_headers_fold_at_spaces_within_78_characters() -> None:
    words = ["word"] * 40
    line = mime.header("Subject", words)
    assert line.endswith("\r\n") and all(len(part) <= 78 for part in line.split("\r\n"))
    assert line.replace("\r\n ", " ") == "Subject: " + " ".join(words) + "\r\n"
    long_url = "<https://example.org/" + "x" * 150 + ">"
    assert mime.header("List-Unsubscribe", [long_url]) == f"List-Unsubscribe: {long_url}\r\n"


def test_values_written_as_they_are_must_fit_in_a_header() -> None:
    assert mime.bare("https://example.org/u?t=1", "List-Unsubscribe") == "https://example.org/u?t=1"
    with pytest.raises(HeaderValueError, match="List-Unsubscribe: a line break"):
        mime.bare("https://example.org/\nBcc: x", "List-Unsubscribe")
    with pytest.raises(HeaderValueError, match=r"address: .*too long"):
        mime.address("A", "a" * 1000 + "@example.org")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000))
def test_base64_bodies_have_lines_of_76_and_read_back(data: bytes) -> None:
    body = mime.base64_body(data)
    lines = body.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines) and all(len(line) == 76 for line in lines[:-1])
    assert not body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    assert binascii.a2b_base64(body.replace(b"\r\n", b"")) == data
