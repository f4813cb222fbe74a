"""Build the MIME message for a rendered digest, optionally DKIM-signed. Pure: sending is the mailer's job.

The parts are encoded with :func:`binascii.b2a_qp` (C) rather than through ``set_content``, whose
pure-Python quoted-printable encoder cost several times more than rendering the digest itself.
Quoted-printable keeps the raw message readable and every line short, whatever the HTML looks like.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from digest.errors import SettingsError
from digest.render import RenderedDigest
from digest.settings import DkimSettings

# What the signature covers: everything a reader or a filter trusts, including the RFC 8058
# one-click unsubscribe headers, which mailbox providers only honour when they are signed.
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
    b"MIME-Version",
    b"Content-Type",
)


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key ready to sign with; built once per cycle by :func:`load_dkim_key`."""

    selector: str
    domain: str
    private_key: bytes = b""

    def __repr__(self) -> str:  # never print the key
        return f"DkimKey(selector={self.selector!r}, domain={self.domain!r})"

    def sign(self, message: EmailMessage) -> None:
        """Add a ``DKIM-Signature`` (relaxed/relaxed, rsa-sha256) over the message as it will be sent."""
        signature = dkim.sign(
            message.as_bytes(),
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h for h in DKIM_HEADERS if h.decode() in message],
        )
        name, _, value = signature.decode("ascii").partition(":")
        # Unfolded: the email package refolds it at its spaces, which relaxed canonicalization
        # and the tag syntax (whitespace inside b= is ignored) both allow.
        message[name] = " ".join(value.split())


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


def _part(content: str, subtype: str) -> EmailMessage:
    part = EmailMessage(policy=SMTP)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(content.encode("utf-8"), istext=True).decode("ascii"))
    return part


def build_message(
    rendered: RenderedDigest,
    *,
    from_address: str,
    to_address: str,
    to_name: str | None,
    unsubscribe_url: str,
    list_id: str,
    now: datetime,
    dkim_key: DkimKey | None = None,
) -> EmailMessage:
    """multipart/alternative (text first, HTML last as mail clients prefer) with RFC 8058 headers."""
    message = EmailMessage(policy=SMTP)
    message["From"] = Address("digest", addr_spec=from_address)
    message["To"] = Address(to_name or "", addr_spec=to_address)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("digest", domain=sender_domain(from_address))
    message["List-Id"] = f"Paper digest <{list_id}>"
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/alternative"
    message.attach(_part(rendered.text, "plain"))
    message.attach(_part(rendered.html, "html"))
    if dkim_key is not None:
        dkim_key.sign(message)
    return message
