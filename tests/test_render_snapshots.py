"""Saved expected output: subject, text, HTML and headers of fixed digests.

Every header is reproducible (the Message-ID and the MIME boundary derive from the digest id and
the recipient), so none is masked.

A deliberate change to the email is reviewed as a diff of these files: ``pytest --update-snapshots``
rewrites them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from digest.mail.message import build_message
from digest.mail.render import render_digest
from digest.models import Digest
from tests.email_fixtures import LINKS, hostile_digest, sample_digest

Snapshot = Callable[[str, str], None]


def headers(digest: Digest) -> str:
    rendered = render_digest(digest, LINKS)
    message = build_message(
        rendered,
        digest_id=digest.digest_id,
        from_address="papers@digest.example.org",
        to_address=digest.subscriber.email,
        to_name=digest.subscriber.name,
        unsubscribe_url=LINKS.unsubscribe,
        list_id="digest.digest.example.org",
        now=datetime(2026, 11, 20, 7, 0, tzinfo=UTC),
    )
    return message.as_bytes().decode("ascii").split("\r\n\r\n", 1)[0].replace("\r\n", "\n") + "\n"


@pytest.mark.parametrize("name, make", [("sample", sample_digest), ("hostile", hostile_digest)])
def test_email_matches_its_snapshot(name: str, make: Callable[[], Digest], snapshot: Snapshot) -> None:
    digest = make()
    rendered = render_digest(digest, LINKS)
    snapshot(f"{name}.subject.txt", rendered.subject + "\n")
    snapshot(f"{name}.txt", rendered.text)
    snapshot(f"{name}.html", rendered.html)
    snapshot(f"{name}.headers.txt", headers(digest))
