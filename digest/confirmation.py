"""Build the double opt-in email. Pure: the web layer sends it with the configured mailer.

The same address gets a differently worded email when it is already subscribed (the link then
replaces their rules), but the web page answers the same either way: only the mailbox owner can
tell the difference, so the form does not reveal who is subscribed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from digest.message import sender_domain
from digest.pages import render_page

SUBJECT_NEW = "Confirm your paper digest subscription"
SUBJECT_CHANGE = "Confirm the new rules of your paper digest"


def build_confirmation(
    *,
    to_address: str,
    rules: Sequence[str],
    confirm_url: str,
    site_url: str,
    from_address: str,
    already_subscribed: bool,
    valid_days: int,
    now: datetime,
) -> EmailMessage:
    """multipart/alternative: a plain-text part and a small HTML part with one button."""
    context = {
        "rules": list(rules),
        "confirm_url": confirm_url,
        "site_url": site_url,
        "already_subscribed": already_subscribed,
        "valid_days": valid_days,
        "subject": SUBJECT_CHANGE if already_subscribed else SUBJECT_NEW,
    }
    message = EmailMessage(policy=SMTP)
    message["From"] = Address("digest", addr_spec=from_address)
    message["To"] = Address(addr_spec=to_address)
    message["Subject"] = context["subject"]
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("confirm", domain=sender_domain(from_address))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_page("confirm_email.txt", **context), subtype="plain", charset="utf-8")
    message.add_alternative(render_page("confirm_email.html", **context), subtype="html", charset="utf-8")
    return message
