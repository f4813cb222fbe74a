"""Bounces and complaints: a Return-Path per subscriber, and a bounce mailbox read over IMAP.

Providers suspend senders whose bounces and complaints go unhandled. Each digest goes out with the
envelope sender ``bounces+<token>@domain`` (from ``bounces.address``), the token a keyed hash of
the subscriber's address (:func:`verp_token`): a bounce names who it is about even when the
report itself does not, and nobody without the secret key can forge one for somebody else. A
report without a valid token (in the address it came back to, or in the quoted message's
Return-Path) changes nothing: anyone can write to the bounce address.

:func:`read_mailbox` fetches the unread messages of ``bounces.imap_*`` (``imaplib``),
:func:`parse_report` reads delivery status notifications (RFC 3464) and abuse reports (ARF, RFC
5965), and :func:`apply_reports` acts on them through the store's own subscriber changes, which are
journalled like any other (so ``doctor --repair`` keeps them): a hard bounce (5.x.x), or
``bounces.soft_limit`` soft ones in a row, *suspends* the subscriber (paused, kept, and listed with
the reason in ``data_dir/bounces.json`` until ``digest resume``); a complaint unsubscribes them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import imaplib
import json
import logging
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from digest.errors import BounceMailboxError, DigestError
from digest.paths import BOUNCES_FILE
from digest.settings import BouncesSettings
from digest.state.backend import StoreBackend
from digest.state.files import write_atomically
from digest.state.subscriptions import paused, resumed

log = logging.getLogger(__name__)

SOFT_RESET_DAYS = 7  # soft bounces further apart than this are not "in a row"
TOKEN_CHARS = 16  # 80 bits; with "bounces+" the local part stays far below SMTP's 64 characters
VERP = re.compile(r"\+([a-z2-7]{16})@", re.IGNORECASE)
ADDRESS = re.compile(r"[^\s<>;\"]+@[^\s<>;\"]+")


def verp_token(secret_key: str, email: str) -> str:
    digest = hmac.new(secret_key.encode("utf-8"), b"bounce:" + email.lower().encode("utf-8"), hashlib.sha256)
    return base64.b32encode(digest.digest()).decode("ascii")[:TOKEN_CHARS].lower()


def verp_address(bounces_address: str, secret_key: str, email: str) -> str:
    """``bounces+<token>@domain`` for ``bounces@domain``: the envelope sender of ``email``'s digest."""
    local, _, domain = bounces_address.rpartition("@")
    return f"{local}+{verp_token(secret_key, email)}@{domain}"


@dataclass(frozen=True, slots=True)
class Report:
    """What one DSN or ARF message says about one subscriber."""

    kind: str  # "hard", "soft" or "complaint"
    recipient: str | None  # the address the report names, if any
    token: str | None  # the VERP token it was sent back to, if any
    detail: str


def _address(value: str | None) -> str | None:
    """``rfc822; user@example.org`` (or a plain or bracketed address) → ``user@example.org``."""
    if not value:
        return None
    found = ADDRESS.search(value.partition(";")[2] or value)
    return found.group(0).lower().strip(".") if found else None


def _token(message: Message) -> str | None:
    """The VERP token a report carries: in the address it was sent back to (a DSN goes to the
    envelope sender), else in the Return-Path of the original message it quotes (an ARF report
    goes to the address registered with the provider's feedback loop, and quotes the message)."""
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
        for value in message.get_all(header) or []:
            found = VERP.search(str(value))
            if found:
                return found.group(1).lower()
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                quoted = inner[0]
            else:
                quoted = HeaderParser().parsestr(str(inner), headersonly=True)
            found = VERP.search(str(quoted.get("Return-Path", "")))
            if found:
                return found.group(1).lower()
    return None


def _fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(block + "\n") for block in re.split(r"\r?\n\r?\n", text.strip()) if block]


def parse_report(message: Message) -> list[Report]:
    """The reports in a DSN (RFC 3464) or an ARF complaint (RFC 5965); ``[]`` for anything else.

    A DSN's per-recipient blocks with ``Action: failed`` and a 5.x.x status are hard bounces, 4.x.x
    (or ``Action: delayed``) soft ones; a feedback report of any type is a complaint."""
    token = _token(message)
    reports: list[Report] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            for block in _fields(part)[1:] or _fields(part):
                action = str(block.get("Action", "")).strip().lower()
                status = str(block.get("Status", "")).strip()
                recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                if action not in ("failed", "delayed") or not status:
                    continue
                hard = action == "failed" and status.startswith("5")
                why = str(block.get("Diagnostic-Code", "")).partition(";")[2].strip() or status
                reports.append(Report("hard" if hard else "soft", recipient, token, f"{status} {why}".strip()))
        elif kind == "message/feedback-report":
            blocks = _fields(part)
            feedback = blocks[0] if blocks else Message()
            recipient = _address(feedback.get("Original-Rcpt-To"))
            if recipient is None:  # else the original message's To, in the third part
                for original in message.walk():
                    if original.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
                        inner = original.get_payload()
                        headers = inner[0] if isinstance(inner, list) and inner else original
                        recipient = _address(str(headers.get("To", ""))) if isinstance(headers, Message) else None
            what = str(feedback.get("Feedback-Type", "abuse")).strip()
            reports.append(Report("complaint", recipient, token, f"complaint ({what})"))
    return reports


# -- state: who is suspended and why, soft bounces in a row -----------------------------------------
def read_state(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / BOUNCES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"suspended": {}, "soft": {}}
    except (OSError, ValueError) as exc:
        raise DigestError(f"cannot read {data_dir / BOUNCES_FILE}: {exc}; fix or remove the file") from None
    return {"suspended": dict(state.get("suspended") or {}), "soft": dict(state.get("soft") or {})}


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    write_atomically(data_dir / BOUNCES_FILE, json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))


@dataclass(slots=True)
class Outcome:
    suspended: list[str]
    unsubscribed: list[str]
    soft: list[str]
    unknown: int  # reports naming nobody we send to


def apply_reports(
    store: StoreBackend, data_dir: Path, secret_key: str, reports: Iterable[Report], soft_limit: int, now: datetime
) -> Outcome:
    """Act on reports through the store's journalled subscriber changes; call with the store lock held."""
    state = read_state(data_dir)
    people = {s.email.lower(): s for s in store.subscribers()}
    by_token = {verp_token(secret_key, email): email for email in people}
    outcome = Outcome([], [], [], 0)
    for report in reports:
        # Only a signed token names the subscriber: a report that merely names an address could be
        # sent by anyone, and would suspend or unsubscribe whoever it names.
        email = by_token.get(report.token or "")
        subscriber = people.get(email or "")
        if email is None or subscriber is None:
            outcome.unknown += 1
            log.info("ignored a %s report with no valid token (about %s)", report.kind, report.recipient or "nobody")
            continue
        if report.kind == "complaint":
            store.remove_subscriber(email)
            state["suspended"].pop(email, None)
            state["soft"].pop(email, None)
            people.pop(email)
            outcome.unsubscribed.append(email)
            log.warning("unsubscribed %s after a complaint: %s", email, report.detail)
            continue
        if email in state["suspended"]:
            continue
        if report.kind == "soft":
            # "In a row": a soft bounce more than SOFT_RESET_DAYS after the last one starts over.
            last = state["soft"].get(email)
            recent = isinstance(last, dict) and (now - datetime.fromisoformat(last["at"])).days < SOFT_RESET_DAYS
            count = int(last["count"]) + 1 if recent and isinstance(last, dict) else 1
            state["soft"][email] = {"count": count, "at": now.isoformat()}
            outcome.soft.append(email)
            if count < soft_limit:
                continue
            reason = f"{count} soft bounces in a row, the last: {report.detail}"
        else:
            reason = f"hard bounce: {report.detail}"
        store.save_subscriber(paused(subscriber))
        state["suspended"][email] = {"at": now.isoformat(), "why": reason}
        state["soft"].pop(email, None)
        outcome.suspended.append(email)
        log.warning("suspended %s: %s", email, reason)
    write_state(data_dir, state)
    return outcome


def resume(store: StoreBackend, data_dir: Path, email: str) -> bool:
    """Active again (the next digest covers the look-back window); False if no such subscriber."""
    key = email.strip().lower()
    subscriber = store.subscriber(key)
    if subscriber is None:
        return False
    store.save_subscriber(resumed(subscriber))
    state = read_state(data_dir)
    if state["suspended"].pop(key, None) is not None or state["soft"].pop(key, None) is not None:
        write_state(data_dir, state)
    return True


# -- the mailbox -------------------------------------------------------------------------------------
def read_mailbox(settings: BouncesSettings) -> tuple[imaplib.IMAP4, list[tuple[str, EmailMessage]]]:
    """Log in, select the folder, and fetch every unread message (without marking it read).

    Returns the open connection: the caller marks the messages read (:func:`mark_read`) only
    after acting on them, so a crash in between reads them again (acting twice changes nothing)."""
    host = settings.imap_host or "localhost"
    where = f"IMAP {host}:{settings.imap_port}"
    try:
        if settings.imap_security == "ssl":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, settings.imap_port, ssl_context=ssl.create_default_context())
        else:
            imap = imaplib.IMAP4(host, settings.imap_port)
            if settings.imap_security == "starttls":
                imap.starttls(ssl.create_default_context())
        imap.login(settings.imap_user or "", settings.resolved_password() or "")
        status, _ = imap.select(settings.folder)
        if status != "OK":
            raise BounceMailboxError(f"{where}: no folder {settings.folder!r}: check bounces.folder")
        status, found = imap.uid("search", "UNSEEN")
        messages = []
        for uid in (found[0] or b"").decode("ascii").split() if status == "OK" else []:
            status, data = imap.uid("fetch", uid, "(BODY.PEEK[])")
            raw = next((part[1] for part in data if isinstance(part, tuple)), None)
            if status == "OK" and isinstance(raw, bytes):
                parsed = message_from_bytes(raw, policy=default_policy)
                assert isinstance(parsed, EmailMessage)
                messages.append((uid, parsed))
    except imaplib.IMAP4.error as exc:
        raise BounceMailboxError(f"{where}: {exc}; check bounces.imap_user and the password file") from None
    except OSError as exc:
        raise BounceMailboxError(f"cannot reach {where}: {exc}; check bounces.imap_host and imap_port") from None
    return imap, messages


def mark_read(imap: imaplib.IMAP4, uids: Iterable[str]) -> None:
    for uid in uids:
        imap.uid("store", uid, "+FLAGS", r"(\Seen)")
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        imap.logout()
