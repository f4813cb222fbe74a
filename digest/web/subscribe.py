"""The sign-up form (``/``, ``POST /subscribe``, ``/check-inbox``) and the confirmation email it sends.

Nothing is stored at sign-up: the rules and the choices (layout, rhythm, hour, cap, delivery:
:mod:`digest.state.preferences`) travel in the signed confirm link, and only
the Confirm button's POST (:mod:`digest.web.confirm`) subscribes. The form answers the same
whether the address is new, subscribed, or was mailed within the hour, so it reveals nobody; and
every mail it sends is rate-limited per address and per client (:mod:`digest.web.limits`); the
per-address count is shared by every web replica on PostgreSQL (:mod:`digest.web.mail_limit`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from digest.errors import DeliveryError, DigestError, PermanentDeliveryError, StoreUnavailableError, TokenError
from digest.mail.mailer import make_mailer
from digest.matching.syntax import RULE_SYNTAX
from digest.models import Subscriber
from digest.paths import OUTBOX_DIR
from digest.signing import MAX_AGE_SECONDS
from digest.state.preferences import Preferences
from digest.state.subscriptions import check_signup, mailbox_key, state_key
from digest.web.confirmation import build_confirmation
from digest.web.forms import ChoiceFields, SignupForm, choice_context
from digest.web.front import Front
from digest.web.live_preview import LivePreview
from digest.web.mail_limit import MailLimit
from digest.web.preview import PREVIEW_DAYS

log = logging.getLogger(__name__)

SLOW_DOWN = "Slow down a little, then try again."
TOO_MANY_SIGNUPS = "Too many sign-ups from your network in the last hour. Please try again later."


def not_sent(exc: DigestError) -> tuple[int, str, str]:
    """The answer when the confirmation email could not be sent: status, the field it is shown on, text."""
    if isinstance(exc, PermanentDeliveryError) and isinstance(exc.__cause__, smtplib.SMTPNotSupportedError):
        # A non-ASCII address, and the SMTP server does not offer SMTPUTF8.
        return (
            400,
            "email_error",
            "Our mail server cannot deliver to addresses with accented or "
            "non-Latin letters before the @. Please use another address.",
        )
    if isinstance(exc, StoreUnavailableError):
        return (
            503,
            "form_error",
            "Our subscription list did not answer in time. Your entries are kept: please try again in a minute.",
        )
    if isinstance(exc, DeliveryError):
        return (
            503,
            "form_error",
            "We could not send the confirmation email just now. "
            "Please check the address and try again in a few minutes.",
        )
    return (
        500,
        "form_error",
        "Something went wrong on our side and no email was sent. Your entries are kept: please try again later.",
    )


class Signup:
    """The front page's form, its sign-up post, and the "check your inbox" page after it."""

    def __init__(self, front: Front, live: LivePreview) -> None:
        self.front = front
        self.live = live
        self.mails = MailLimit(front)  # per mailbox: in memory (TinyDB) or shared by replicas (PostgreSQL)

    def form_page(self, status: int = 200, **context: Any) -> HTMLResponse:
        values: dict[str, Any] = {
            "email": "",
            "rules_text": "",
            "layout": "full",
            "email_error": None,
            "choice_errors": (),
            "rule_errors": (),
            "form_error": None,
            "preview": None,
            "preview_error": None,
            "preview_days": PREVIEW_DAYS,
            "lookback_days": self.front.settings.lookback_days,
        }
        values.update(context)
        shown = values.pop("choices", None) or ChoiceFields.of(Preferences())
        values.update(choice_context(self.front.settings.schedule, shown))
        return self.front.page("index.html", status=status, **values)

    async def index(self, request: Request) -> Response:
        return self.form_page()

    async def subscribe(self, request: Request) -> Response:
        front = self.front
        raw = await request.form()
        form = SignupForm.read(raw)
        kept = {**form.kept(), "choices": form.choices.shown()}  # the choices as typed, cut short
        # Reading rules costs CPU (a regular expression is compiled): at most so many a minute per
        # client, counted with the live preview's, and in a worker thread, off the event loop.
        if not front.limits.ip_previews.allow(front.client_ip(request), front.now_seconds()):
            return self.form_page(429, **kept, form_error=SLOW_DOWN)
        if form.action == "preview":
            preview, problems = await self.live.preview_for(form.rules_text)
            return self.form_page(**kept, preview=preview, preview_error=problems)
        problem = front.form_problem(request, raw)
        if problem:
            return self.form_page(400, **kept, form_error=problem)
        check = await run_in_threadpool(check_signup, form.email, form.rules_text)
        chosen, choice_errors = form.choices.chosen(Preferences(layout=form.layout), front.settings.schedule.timezone)
        if not check.ok or check.email is None or choice_errors:
            errors = {"email_error": check.email_error, "rule_errors": check.rule_errors}
            return self.form_page(400, **kept, **errors, choice_errors=choice_errors)
        now = front.now_seconds()
        if not front.limits.ip_signups.allow(front.client_ip(request), now):
            return self.form_page(429, **kept, form_error=TOO_MANY_SIGNUPS)
        refused = await self.mail_once(check.email, check.rules, chosen, now)
        if refused is not None:
            status, field, text = refused
            return self.form_page(status, **kept, **{field: text})
        # The same answer whether the address is new, subscribed, or was mailed within the hour; a
        # redirect, so reloading the page does not send the form again.
        inbox = urlencode({"token": front.signer.sign("inbox", check.email)})
        return RedirectResponse(f"/check-inbox?{inbox}", status_code=303)

    async def mail_once(
        self, email: str, rules: Sequence[str], chosen: Preferences, now: float
    ) -> tuple[int, str, str] | None:
        """Send the confirmation unless this inbox was mailed within the window; :func:`not_sent`'s
        answer when sending failed (the attempt then does not count)."""
        # One inbox, however it is spelled (case, +tags, Gmail's dots), kept only as a keyed hash.
        mailbox = mailbox_key(email).encode("utf-8")
        address_key = hmac.new(self.front.secret.encode(), mailbox, hashlib.sha256).hexdigest()[:32]
        # Read before the claim (and bounded): a store that fails here has counted no mail, and the
        # form comes back with the person's entries, as when sending fails.
        try:
            existing, departed = await self.front.read(
                lambda store: (store.subscriber(email), store.departed_at(email))
            )
        except DigestError as exc:
            log.error("confirmation email not sent: %s", exc)
            return not_sent(exc)
        try:
            claimed = await self.mails.claim(address_key, now)
        except StoreUnavailableError as exc:
            log.error("confirmation email not sent: %s", exc)
            return not_sent(exc)
        if not claimed:
            return None
        try:
            await run_in_threadpool(self.send_confirmation, email, rules, chosen, existing, departed)
        except DigestError as exc:
            await self.mails.release(address_key)
            log.error("confirmation email not sent: %s", exc)
            return not_sent(exc)
        return None

    async def check_inbox(self, request: Request) -> Response:
        """The page after a sign-up; it names the address when its (hour-long) token is good."""
        try:
            email: str | None = self.front.token_data("inbox", request.query_params.get("token"))["e"]
        except TokenError:
            email = None
        window_minutes = round(self.front.limits.config.address_window_seconds / 60)
        return self.front.page("check_inbox.html", email=email, window_minutes=window_minutes)

    def send_confirmation(
        self,
        email: str,
        rules: Sequence[str],
        chosen: Preferences | None,
        existing: Subscriber | None,
        departed: datetime | None,
    ) -> None:
        """Mail the confirm link; runs in a worker thread (SMTP blocks). ``existing`` and
        ``departed``: the store's record of the address, read before (:meth:`mail_once`).

        The rules and the choices travel in the signed link: nothing is stored before the click.
        The layout in ``l`` as before, the other choices in ``p`` only where they differ from the
        defaults, so a link for the defaults reads as one sent before the choices existed."""
        chosen = chosen or Preferences()
        front, settings = self.front, self.front.settings
        key = state_key(existing, departed)
        others = {name: value for name, value in chosen.differences().items() if name != "layout"}
        extra = {"p": others} if others else {}
        token = front.signer.sign("confirm", email, r=list(rules), s=key, l=chosen.layout, y=RULE_SYNTAX, **extra)
        max_age = MAX_AGE_SECONDS["confirm"] or 0
        message = build_confirmation(
            to_address=email,
            rule_count=len(rules),
            confirm_url=front.link("/confirm", token=token),
            site_url=front.link("/"),
            from_address=settings.smtp.from_address,
            already_subscribed=existing is not None and existing.active,
            valid_days=max_age // 86400,
            now=front.clock(),
            site_name=settings.site_name,
            sender_name=settings.sender_name,
        )
        with make_mailer(settings.smtp, settings.data_dir / OUTBOX_DIR) as mailer:
            mailer.send(message)
        self.mails.save(front.now_seconds())
