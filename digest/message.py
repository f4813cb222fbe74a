"""Build the MIME message for a rendered digest. Pure: sending is the mailer's job."""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from digest.render import RenderedDigest


def sender_domain(from_address: str) -> str:
    return from_address.rpartition("@")[2] or "localhost"


def build_message(
    rendered: RenderedDigest,
    *,
    from_address: str,
    to_address: str,
    to_name: str | None,
    unsubscribe_url: str,
    list_id: str,
    now: datetime,
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
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message
