"""One digest made ready to send: its links, HTML, message, archived page and delivery note.

The archived page is the email's HTML, except for someone with a cap on papers per email: theirs
is the digest rendered without the cap (:meth:`Composer.online_page`), so that "see the full digest
online" shows every paper in full, as it does for everyone else.

The send loop gets this from the render process (:mod:`digest.cycle.render_ahead`) a few emails
ahead; ``digest preview`` makes the same HTML and message. A digest that cannot be made (a bug in
a template, a paper the renderer chokes on, the archive's disk full) comes back as
:class:`RenderFailed` instead of an exception, so that one subscriber's failure is recorded for
that subscriber and the loop goes on to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from digest.cycle.config import CycleConfig
from digest.cycle.links import digest_links
from digest.mail.bounces import verp_address
from digest.mail.message import DEFAULT_SENDER_NAME, DkimKey, OutgoingEmail, build_message
from digest.mail.render import Links, RenderedDigest, render_digest
from digest.models import Digest
from digest.signing import Signer
from digest.state.backend import StoreBackend
from digest.state.store import DeliveryNote


def digest_message(
    digest: Digest,
    rendered: RenderedDigest,
    links: Links,
    from_address: str,
    now: datetime,
    dkim_key: DkimKey | None = None,
    from_name: str = DEFAULT_SENDER_NAME,
) -> OutgoingEmail:
    """The email of one rendered digest, addressed to its subscriber, as a cycle sends it."""
    return build_message(
        rendered,
        digest_id=digest.digest_id,
        from_address=from_address,
        to_address=digest.subscriber.email,
        to_name=digest.subscriber.name,
        unsubscribe_url=links.unsubscribe,
        list_id=f"digest.{from_address.rpartition('@')[2] or 'localhost'}",
        now=now,
        dkim_key=dkim_key,
        from_name=from_name,
    )


@dataclass(frozen=True, slots=True)
class Composed:
    """A digest ready for the send loop: its message, and what recording its delivery needs."""

    message: OutgoingEmail
    note: DeliveryNote


@dataclass(frozen=True, slots=True)
class RenderFailed:
    """A digest that could not be made: the subscriber's papers stay pending for the next cycle."""

    why: str


@dataclass(frozen=True, slots=True)
class Composer:
    """Makes a cycle's digests; ``receipt`` is the coverage line every digest of the cycle ends with."""

    config: CycleConfig
    signer: Signer
    now: Callable[[], datetime]
    receipt: str = ""

    def with_receipt(self, receipt: str) -> Composer:
        return replace(self, receipt=receipt)

    def links(self, digest: Digest) -> Links:
        return digest_links(self.signer, self.config.public_url, digest)

    def compose(self, digest: Digest) -> tuple[bytes, OutgoingEmail]:
        """The digest's HTML (ASCII bytes, for the archive or a preview) and its message."""
        config, links = self.config, self.links(digest)
        rendered = render_digest(digest, links, site_name=config.site_name, receipt=self.receipt)
        message = digest_message(
            digest, rendered, links, config.from_address, self.now(), config.dkim_key, config.sender_name
        )
        return rendered.html_bytes(), message

    def online_page(self, digest: Digest, html: bytes) -> bytes:
        """The page "View online" shows: the email's own HTML (``html``), except for someone whose
        cap on papers (``Subscriber.max_papers``) left papers out of it; theirs is rendered again
        without the cap, so the online page has every paper in full as anyone else's does (one
        more render, for those people only)."""
        cap = digest.subscriber.max_papers
        if cap is None or cap >= len(digest.entries):
            return html
        whole = replace(digest, subscriber=replace(digest.subscriber, max_papers=None))
        rendered = render_digest(whole, self.links(digest), site_name=self.config.site_name, receipt=self.receipt)
        return rendered.html_bytes()

    def for_sending(self, store: StoreBackend, archive: Path) -> Callable[[Digest], Composed | RenderFailed]:
        """The render process's work: make a digest, keep its page for "view online", and make what
        recording its delivery will need. Any error becomes a :class:`RenderFailed` for that digest."""
        bounces_to = self.config.bounces_address

        def make(digest: Digest) -> Composed | RenderFailed:
            try:
                html, message = self.compose(digest)
                if bounces_to:  # the envelope sender (Return-Path) names the subscriber, signed (digest.mail.bounces)
                    sender = verp_address(bounces_to, self.config.secret_key, digest.subscriber.email)
                    message = replace(message, from_address=sender)
                (archive / f"{digest.digest_id}.html").write_bytes(self.online_page(digest, html))
                note = store.delivery_note(digest.subscriber.email, [e.item for e in digest.entries], digest.digest_id)
            except Exception as exc:  # one subscriber's failure: the send loop records it for them
                return RenderFailed(f"{type(exc).__name__}: {exc}")
            return Composed(message, note)

        return make
