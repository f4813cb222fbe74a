"""Build the bytes of a digest email, optionally DKIM-signed. Pure: sending is the mailer's job.

A digest is always the same shape, multipart/alternative with a text part and an HTML part, so it
is written straight to bytes (:mod:`digest.mail.mime`) instead of through :class:`email.message.EmailMessage`,
whose header refolding and generator cost more than rendering the digest. The result,
:class:`OutgoingEmail`, carries the envelope the mailer needs next to the bytes.

The Message-ID is derived from the digest id and the recipient, not drawn at random: if the process
dies after the SMTP server accepted a digest but before the delivery was recorded, the digest sent
again for the same day has the same Message-ID, and receiving servers that de-duplicate on it
(Gmail does) show it once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from digest.errors import SettingsError
from digest.mail import mime
from digest.mail.render import RenderedDigest
from digest.settings import DkimSettings

# What the signature covers: everything a reader or a filter trusts, including the RFC 8058
# one-click unsubscribe headers, which mailbox providers only honour when they are signed. From,
# Subject and List-Unsubscribe are named twice, once more than the message has them ("oversigned",
# RFC 6376 8.15): a second one added on the way, which some readers would show, breaks the signature.
OVERSIGNED = (b"From", b"Subject", b"List-Unsubscribe")
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"Auto-Submitted",
    b"Feedback-ID",
    b"MIME-Version",
    b"Content-Type",
    *OVERSIGNED,
)
DEFAULT_SENDER_NAME = "Paper digest"


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key ready to sign with; built once per cycle by :func:`load_dkim_key`."""

    selector: str
    domain: str
    private_key: bytes = b""

    def __repr__(self) -> str:  # never print the key
        return f"DkimKey(selector={self.selector!r}, domain={self.domain!r})"

    def sign(self, raw: bytes) -> bytes:
        """``raw`` with a ``DKIM-Signature`` (relaxed/relaxed, rsa-sha256) in front, over the bytes as sent."""
        return (
            bytes(
                dkim.sign(
                    raw,
                    self.selector.encode("ascii"),
                    self.domain.encode("ascii"),
                    self.private_key,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=list(DKIM_HEADERS),
                )
            )
            + raw
        )


def sender_domain(from_address: str) -> str:
    return from_address.rpartition("@")[2] or "localhost"


def load_dkim_key(settings: DkimSettings, from_address: str) -> DkimKey | None:
    """The configured key, checked now so a bad one stops the cycle before anything is sent; or None."""
    if settings.private_key_file is not None:
        try:
            pem = settings.private_key_file.read_bytes()
        except OSError as exc:
            raise SettingsError(f"dkim.private_key_file: cannot read {settings.private_key_file}: {exc}") from exc
        where = "dkim.private_key_file"
    elif settings.private_key is not None:
        pem = settings.private_key.get_secret_value().encode("utf-8")
        where = "dkim.private_key"
    else:
        return None
    try:
        parse_pem_private_key(pem)
    except (UnparsableKeyError, ValueError, IndexError) as exc:
        raise SettingsError(f"{where}: not a PEM-encoded RSA private key ({type(exc).__name__})") from None
    assert settings.selector is not None  # the settings model requires it with a key
    return DkimKey(settings.selector, settings.domain or sender_domain(from_address), pem)


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """A message ready for the wire: its bytes (CRLF line ends) and the envelope to send them with."""

    from_address: str
    to_address: str
    subject: str
    message_id: str
    raw: bytes
    smtputf8: bool = False  # an address is not ASCII: the SMTP server must accept SMTPUTF8 (RFC 6531)

    def as_bytes(self) -> bytes:
        return self.raw


def message_id(digest_id: str, recipient: str, domain: str) -> str:
    """The same for the same digest to the same person, so a digest re-sent after a crash can be de-duplicated.

    The digest id is kept readable (it names the archived copy, ``archive/<digest_id>.html``); the
    recipient only enters through a hash.
    """
    person = hashlib.sha256(f"{digest_id}|{recipient.lower()}".encode()).hexdigest()[:16]
    return f"<digest.{mime.bare(digest_id, 'digest id')}.{person}@{domain}>"


def _head(
    rendered: RenderedDigest,
    to: tuple[str, str | None],
    sender: tuple[str, str],
    msgid: str,
    *,
    unsubscribe_url: str,
    list_id: str,
    now: datetime,
    boundary: str,
) -> bytes:
    """The message's header lines, RFC 8058's one-click unsubscribe among them, and the blank line."""
    (to_address, to_name), (from_address, from_name) = to, sender
    lines = (
        mime.header("From", mime.address(from_name, from_address)),
        mime.header("To", mime.address(to_name, to_address)),
        mime.header("Subject", mime.unstructured(rendered.subject)),
        f"Date: {format_datetime(now)}\r\n",
        f"Message-ID: {msgid}\r\n",
        mime.header("List-Id", ["Paper", "digest", f"<{mime.bare(list_id, 'List-Id')}>"]),
        mime.header("List-Unsubscribe", [f"<{mime.bare(unsubscribe_url, 'List-Unsubscribe')}>"]),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "Precedence: bulk\r\n",
        f"Feedback-ID: digest:{mime.bare(sender_domain(from_address), 'Feedback-ID')}\r\n",
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n',
        "\r\n",
    )
    return "".join(lines).encode("utf-8")


def _body(rendered: RenderedDigest, boundary: str) -> bytes:
    """The text part, then the HTML part: in 7-bit as render wrote it where it can go so, else base64."""
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    html = rendered.html_bytes()
    # Render made the 7-bit body already, to measure the part as sent (see render_digest).
    made = rendered.html_wire
    html_body = made if made and delimiter[2:-2] not in made else mime.seven_bit_html(html, delimiter[2:-2])
    return b"".join(
        (
            delimiter[2:],
            b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
            mime.base64_body(rendered.text.encode("utf-8")),
            delimiter,
            b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: ',
            b"7bit\r\n\r\n" if html_body is not None else b"base64\r\n\r\n",
            html_body if html_body is not None else mime.base64_body(html),
            delimiter[:-2],
            b"--\r\n",
        )
    )


def build_message(
    rendered: RenderedDigest,
    *,
    digest_id: str,
    from_address: str,
    to_address: str,
    to_name: str | None,
    unsubscribe_url: str,
    list_id: str,
    now: datetime,
    dkim_key: DkimKey | None = None,
    from_name: str = DEFAULT_SENDER_NAME,
) -> OutgoingEmail:
    """multipart/alternative (text first, HTML last as mail clients prefer) with RFC 8058 headers.

    ``Feedback-ID`` (``digest:<sender domain>``) lets Gmail's postmaster tools report complaints
    about the digest apart from other mail of the same domain.
    """
    msgid = message_id(digest_id, to_address, sender_domain(from_address))
    # A fixed boundary per message keeps the bytes reproducible. A base64 line never starts with
    # "--"; the 7-bit HTML part is checked not to hold the boundary (else it goes in base64).
    boundary = "=_" + hashlib.sha256(msgid.encode()).hexdigest()[:28]
    head = _head(
        rendered,
        (to_address, to_name),
        (from_address, from_name),
        msgid,
        unsubscribe_url=unsubscribe_url,
        list_id=list_id,
        now=now,
        boundary=boundary,
    )
    raw = head + _body(rendered, boundary)
    return OutgoingEmail(
        from_address=from_address,
        to_address=to_address,
        subject=rendered.subject,
        message_id=msgid,
        raw=dkim_key.sign(raw) if dkim_key is not None else raw,
        smtputf8=not (from_address.isascii() and to_address.isascii()),
    )
