"""Build the double opt-in email. Pure: the web layer sends it with the configured mailer.

The same address gets a differently worded email when it is already subscribed (the link then
replaces their rules), but the web page answers the same either way: only the mailbox owner can
tell the difference, so the form does not reveal who is subscribed.

Anyone can type anyone's address into the form, so the email carries nothing the requester wrote
but the address itself: it says how many rules there are, and the link's page shows them before
the person presses Confirm. Otherwise the rules field would let a stranger send any text, signed
with the operator's DKIM key, to any inbox.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid

from digest.mail.message import sender_domain
from digest.web.pages import render_page

SUBJECT_NEW = "Confirm your paper digest subscription"
SUBJECT_CHANGE = "Confirm the new rules of your paper digest"


def build_confirmation(
    *,
    to_address: str,
    rule_count: int,
    confirm_url: str,
    site_url: str,
    from_address: str,
    already_subscribed: bool,
    site_name: str = "Paper digest",
    sender_name: str | None = None,
    layout: str = "full",
    valid_days: int,
    now: datetime,
) -> EmailMessage:
    """multipart/alternative: a plain-text part and a small HTML part with one button.

    An address with a non-ASCII local part gets the SMTPUTF8 policy: the SMTP server must offer
    SMTPUTF8 (RFC 6531), or sending fails with a :class:`~digest.errors.PermanentDeliveryError`.
    """
    context = {
        "rule_count": rule_count,
        "confirm_url": confirm_url,
        "site_url": site_url,
        "already_subscribed": already_subscribed,
        "valid_days": valid_days,
        "subject": SUBJECT_CHANGE if already_subscribed else SUBJECT_NEW,
        "site_name": site_name,
        "layout": layout,
    }
    message = EmailMessage(policy=SMTP if to_address.isascii() else SMTPUTF8)
    message["From"] = Address(sender_name or site_name, addr_spec=from_address)
    # ``Address`` refuses a non-ASCII local part; as text it is kept, and sent with SMTPUTF8.
    message["To"] = Address(addr_spec=to_address) if to_address.isascii() else to_address
    message["Subject"] = context["subject"]
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("confirm", domain=sender_domain(from_address))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_page("confirm_email.txt", **context), subtype="plain", charset="utf-8")
    message.add_alternative(render_page("confirm_email.html", **context), subtype="html", charset="utf-8")
    return message
