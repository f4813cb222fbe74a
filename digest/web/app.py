"""The web front served by ``digest serve``: sign up (double opt-in), manage, unsubscribe, archive.

Pages (Jinja2, ``templates/web``) work without JavaScript; one same-origin script adds the live
preview. The pure decisions live in :mod:`digest.state.subscriptions` (form checks, state changes),
:mod:`digest.web.preview`, :mod:`digest.web.ratelimit` and :mod:`digest.web.confirmation`; this module is the
I/O around them: it reads and writes the process's one in-memory store through
:class:`digest.state.keeper.StoreKeeper` (a change is journalled and fsynced before it is answered, also
while the service's own cycle sends; only a ``digest run`` started beside the service holds the
store lock long enough for a friendly "busy, try again"), sends the confirmation email and answers
HTTP.

Every link that acts on a subscription carries a token signed for that address and purpose
(:mod:`digest.signing`); forms also carry a signed form token and are refused when the browser says
they come from another site (:mod:`digest.web.security`: no cookie is needed), except the RFC 8058
one-click unsubscribe, which mail providers POST from their servers.

Nothing changes on a GET or HEAD: mail scanners open every link of an email, so the confirmation
link shows the rules and a Confirm button, and only that button's POST subscribes. A confirm link
fits only the state it was sent for (:func:`digest.state.subscriptions.state_key`, which includes the last
unsubscribe), so an old one can never undo a later change. Redirects are relative and there are
no trailing-slash redirects: no Location ever takes its host from the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import smtplib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from digest.clock import cron_trigger, next_fire, today_in, utc_now
from digest.errors import CycleLockedError, DeliveryError, DigestError, PermanentDeliveryError
from digest.mail.mailer import make_mailer
from digest.matching.rules import TEXT_FIELDS, ItemIndex
from digest.models import LAYOUTS, Subscriber
from digest.settings import Settings
from digest.signing import MAX_AGE_SECONDS, Purpose, Signer, TokenError
from digest.state.files import write_atomically
from digest.state.keeper import StoreKeeper
from digest.state.store import STORE_FILE, Store
from digest.state.subscriptions import (
    MAX_RULES_CHARS,
    check_rules,
    check_signup,
    confirmed,
    form_layout,
    mailbox_key,
    paused,
    resumed,
    state_key,
    with_rules,
)
from digest.web import health, metrics
from digest.web.confirmation import build_confirmation
from digest.web.pages import render_page, static_dir
from digest.web.preview import PREVIEW_BUSY, PREVIEW_DAYS, WORKER, Preview, PreviewBusy, preview_rules
from digest.web.ratelimit import RateLimit
from digest.web.security import (
    ARCHIVE_CSP,
    CSRF_FIELD,
    SECURITY_HEADERS,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    client_address,
    cross_site,
    form_token,
    form_token_ok,
    rate_key,
    trusted_networks,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BODY_BYTES = 32 * 1024
LOCK_WAIT_SECONDS = 3.0
LIMITS_FILE = "web-limits.json"
DIGEST_ID = re.compile(r"[0-9a-f]{20}")
ONE_CLICK = "One-Click"
FAVICON = "favicon.svg"
FORM_EXPIRED = "This form had expired. Your entries are kept: please send it again."
FORM_CROSS_SITE = "This form was sent from another site, so nothing was done. If you meant it, press the button here."
BUSY = (
    "The daily digest is being sent right now, so this could not be saved. Nothing was changed: "
    "please try again in a minute with the button below."
)
MANAGE_NOTICES = {"saved": "Your changes are saved.", "paused": "Paused: no digests until you resume.", "resumed": ""}


@dataclass(frozen=True, slots=True)
class WebLimits:
    """How often the form may send mail: per address (a stranger's inbox) and per client IP."""

    mails_per_address: int = 1
    address_window_seconds: float = 3600
    signups_per_ip: int = 10
    ip_window_seconds: float = 3600
    previews_per_ip: int = 120
    preview_window_seconds: float = 60


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """A confirm token, read: the address, the rules asked for, and the state it was sent for."""

    token: str
    email: str
    rules: tuple[str, ...]
    key: str
    layout: str = "full"


class Busy(Exception):
    """Another process (a CLI ``digest run``) holds the store lock; the person should try again shortly."""


class WebFront:
    """The handlers, with what they share: settings, signer, limits, clock and the preview index."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime],
        today: Callable[[], date],
        limits: WebLimits,
        keeper: StoreKeeper | None = None,
    ) -> None:
        self.settings = settings
        # The process's one in-memory store (``digest serve`` shares it with the cycle); an app
        # built alone (tests, ``digest preview``) keeps its own.
        self.keeper = keeper or StoreKeeper(settings.data_dir, write_wait_seconds=LOCK_WAIT_SECONDS)
        self.secret = settings.resolved_secret_key()
        self.signer = Signer(self.secret)
        self.clock = clock
        self.today = today
        self.limits = limits
        self.address_mails = RateLimit(limits.mails_per_address, limits.address_window_seconds)
        self.ip_signups = RateLimit(limits.signups_per_ip, limits.ip_window_seconds)
        self.ip_previews = RateLimit(limits.previews_per_ip, limits.preview_window_seconds)
        self.limits_path = settings.data_dir / LIMITS_FILE
        self._limits_lock = threading.Lock()
        self._load_limits()
        self.trusted = trusted_networks(settings.web.trusted_proxies)
        self._index_lock = threading.Lock()
        self._index_key: tuple[object, ...] | None = None
        self._index: ItemIndex | None = None

    # -- helpers ------------------------------------------------------------------------------
    def now_seconds(self) -> float:
        return self.clock().timestamp()

    def link(self, path: str, **query: str) -> str:
        """An absolute link for emails, built from ``public_url``."""
        return f"{self.settings.public_url}{path}" + (f"?{urlencode(query)}" if query else "")

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page; its forms get a fresh form token (no cookie: see :mod:`digest.web.security`).

        ``next_run`` is passed uncalled: only a page that says when the next digest goes out pays for it.
        """
        csrf = form_token(self.secret, self.now_seconds())
        html = render_page(
            template,
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            next_run=self.next_run,
            site_name=self.settings.site_name,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def next_run(self) -> str:
        """When the schedule fires next, as a person reads it: "Sat Nov 21 at 07:00 CET (Europe/Paris)".

        "The next daily run" alone leaves a new subscriber guessing whether it is in an hour or tomorrow,
        and in which time zone; "" if the schedule has no fire within a year.
        """
        schedule = self.settings.schedule
        fire = next_fire(cron_trigger(schedule.cron, schedule.timezone), self.clock())
        if fire is None:
            return ""
        zone = fire.tzname() or schedule.timezone
        named = zone if zone == schedule.timezone else f"{zone} ({schedule.timezone})"
        return f"{fire:%a %b} {fire.day} at {fire:%H:%M} {named}"

    def message(self, request: Request, title: str, text: str, status: int, **extra: Any) -> HTMLResponse:
        return self.page(request, "message.html", status=status, title=title, text=text, **extra)

    def form_problem(self, request: Request, form: FormData) -> str | None:
        """Why a form post is refused (another site sent it, or its form token is not ours or too old)."""
        if cross_site(request.headers, self.settings.public_url):
            return FORM_CROSS_SITE
        if not form_token_ok(self.secret, form.get(CSRF_FIELD), self.now_seconds()):
            return FORM_EXPIRED
        return None

    def client_ip(self, request: Request) -> str:
        """The client's rate-limit bucket: its IP (X-Forwarded-For only from ``web.trusted_proxies``)."""
        peer = request.client.host if request.client else None
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        return rate_key(client_address(peer, forwarded, self.trusted))

    def token_data(self, purpose: Purpose, token: str | None) -> dict[str, Any]:
        if not token:
            raise TokenError("this link is incomplete")
        return self.signer.verify(purpose, token)

    def bad_link(self, request: Request, exc: TokenError, purpose: str) -> HTMLResponse:
        if exc.expired and purpose == "confirm":
            text = "This confirmation link has expired. Sign up again and you will get a fresh one."
        else:
            text = "This link is not valid. Please use the latest link from your email, copied in full."
        return self.message(request, "This link does not work", text, 400, show_home=True)

    async def write(self, change: Callable[[Store], Any], departure: str | None = None) -> Any:
        """Run ``change`` on the shared store (by the keeper's writer thread): journalled and fsynced
        before it returns, also while this process's cycle sends; :class:`Busy` only if another
        process (a CLI ``digest run``) holds the file lock for :data:`LOCK_WAIT_SECONDS`."""
        try:
            return await asyncio.wrap_future(self.keeper.submit(change, departure))
        except CycleLockedError as exc:
            raise Busy() from exc

    @staticmethod
    def retry_later(response: Response) -> Response:
        """A 503 page that shows its form again (with :data:`BUSY`), so "try again" has its button."""
        response.headers["retry-after"] = "30"
        return response

    async def read(self, fn: Callable[[Store], T]) -> T:
        """``fn`` on the shared store: at once when memory is current and no lock is taken
        (:meth:`~digest.state.keeper.StoreKeeper.read_now`), else in a worker thread."""
        done, value = self.keeper.read_now(fn)
        if done:
            return value  # type: ignore[return-value]
        return await run_in_threadpool(self.keeper.read, fn)

    def read_store(self) -> Store:
        """The shared in-memory store, read again first if another process wrote (call it in a
        worker thread). Handlers only read from it: every change goes through :meth:`write`."""
        return self.keeper.store()

    # -- the sign-up form ---------------------------------------------------------------------
    def form_page(self, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        values = {
            "email": "",
            "rules_text": "",
            "layout": "full",
            "email_error": None,
            "rule_errors": (),
            "form_error": None,
            "preview": None,
            "preview_error": None,
            "preview_days": PREVIEW_DAYS,
            "lookback_days": self.settings.sources.hf_papers.lookback_days,
        }
        values.update(context)
        return self.page(request, "index.html", status=status, **values)

    async def index(self, request: Request) -> Response:
        return self.form_page(request)

    async def subscribe(self, request: Request) -> Response:
        form = await request.form()
        email_text = str(form.get("email", ""))
        rules_text = str(form.get("rules", ""))
        layout = form_layout(form.get("layout"))
        kept: dict[str, Any] = {"email": email_text, "rules_text": rules_text, "layout": layout}
        # Reading rules costs CPU (a regular expression is compiled): at most so many a minute per
        # client, counted with the live preview's, and in a worker thread, off the event loop.
        if not self.ip_previews.allow(self.client_ip(request), self.now_seconds()):
            return self.form_page(request, 429, **kept, form_error="Slow down a little, then try again.")
        if form.get("action") == "preview":
            preview, problems = await self.preview_for(rules_text)
            return self.form_page(request, **kept, preview=preview, preview_error=problems)
        problem = self.form_problem(request, form)
        if problem:
            return self.form_page(request, 400, **kept, form_error=problem)
        check = await run_in_threadpool(check_signup, email_text, rules_text)
        if not check.ok or check.email is None:
            return self.form_page(request, 400, **kept, email_error=check.email_error, rule_errors=check.rule_errors)
        now = self.now_seconds()
        if not self.ip_signups.allow(self.client_ip(request), now):
            return self.form_page(
                request,
                429,
                **kept,
                form_error="Too many sign-ups from your network in the last hour. Please try again later.",
            )
        # One inbox, however it is spelled (case, +tags, Gmail's dots), kept only as a keyed hash.
        mailbox = mailbox_key(check.email).encode("utf-8")
        address_key = hmac.new(self.secret.encode(), mailbox, hashlib.sha256).hexdigest()[:32]
        if self.address_mails.allow(address_key, now):
            try:
                await run_in_threadpool(self.send_confirmation, check.email, check.rules, layout)
            except DeliveryError as exc:
                self.address_mails.forget_last(address_key)
                log.error("confirmation email not sent: %s", exc)
                if isinstance(exc, PermanentDeliveryError) and isinstance(exc.__cause__, smtplib.SMTPNotSupportedError):
                    return self.form_page(  # a non-ASCII address, and the SMTP server does not offer SMTPUTF8
                        request,
                        400,
                        **kept,
                        email_error="Our mail server cannot deliver to addresses with accented or "
                        "non-Latin letters before the @. Please use another address.",
                    )
                return self.form_page(
                    request,
                    503,
                    **kept,
                    form_error="We could not send the confirmation email just now. "
                    "Please check the address and try again in a few minutes.",
                )
            except DigestError as exc:
                self.address_mails.forget_last(address_key)
                log.error("confirmation email not sent: %s", exc)
                return self.form_page(
                    request,
                    500,
                    **kept,
                    form_error="Something went wrong on our side and no email was sent. "
                    "Your entries are kept: please try again later.",
                )
        # The same answer whether the address is new, subscribed, or was mailed within the hour; a
        # redirect, so reloading the page does not send the form again.
        inbox = urlencode({"token": self.signer.sign("inbox", check.email)})
        return RedirectResponse(f"/check-inbox?{inbox}", status_code=303)

    async def check_inbox(self, request: Request) -> Response:
        """The page after a sign-up; it names the address when its (hour-long) token is good."""
        try:
            email: str | None = self.token_data("inbox", request.query_params.get("token"))["e"]
        except TokenError:
            email = None
        window_minutes = round(self.limits.address_window_seconds / 60)
        return self.page(request, "check_inbox.html", email=email, window_minutes=window_minutes)

    def send_confirmation(self, email: str, rules: Sequence[str], layout: str = "full") -> None:
        """Mail the confirm link; runs in a worker thread (the store read and SMTP block).

        The rules and the layout travel in the signed link: nothing is stored before the click."""
        store = self.read_store()
        existing = store.subscriber(email)
        key = state_key(existing, store.departed_at(email))
        token = self.signer.sign("confirm", email, r=list(rules), s=key, l=layout)
        max_age = MAX_AGE_SECONDS["confirm"] or 0
        message = build_confirmation(
            to_address=email,
            rule_count=len(rules),
            confirm_url=self.link("/confirm", token=token),
            site_url=self.link("/"),
            from_address=self.settings.smtp.from_address,
            already_subscribed=existing is not None and existing.active,
            valid_days=max_age // 86400,
            now=self.clock(),
            site_name=self.settings.site_name,
            sender_name=self.settings.sender_name,
        )
        with make_mailer(self.settings.smtp, self.settings.data_dir / "outbox") as mailer:
            mailer.send(message)
        self._save_limits()

    def _load_limits(self) -> None:
        try:
            data = json.loads(self.limits_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(data, dict):
            self.address_mails.restore(data.get("address_mails"), self.now_seconds())

    def _save_limits(self) -> None:
        """Keep the per-address limit across restarts (addresses are stored only as keyed hashes).

        One writer at a time: sign-ups send in worker threads, and the temporary file is per process.
        """
        with self._limits_lock:
            payload = {"address_mails": self.address_mails.snapshot(self.now_seconds())}
            try:
                write_atomically(self.limits_path, json.dumps(payload).encode("utf-8"))
            except OSError as exc:
                log.warning("could not save the sign-up rate limits to %s: %s", self.limits_path, exc)

    # -- live preview -------------------------------------------------------------------------
    def recent_index(self) -> ItemIndex:
        """The index of the last days' stored papers, rebuilt only when the store file or the day changes.

        Called in the preview worker; titles and abstracts are tokenized here, once, so that a
        preview's time budget goes to matching.
        """
        today = self.today()
        path = self.settings.data_dir / STORE_FILE
        try:
            stat = path.stat()
            key: tuple[object, ...] = (today, stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            key = (today, None)
        with self._index_lock:
            if self._index is None or key != self._index_key:
                start = today - timedelta(days=PREVIEW_DAYS - 1)
                index = ItemIndex(self.read_store().items_listed_between(start, today))
                for name in TEXT_FIELDS:
                    index.field(name)
                self._index, self._index_key = index, key
            return self._index

    async def preview_for(self, rules_text: str) -> tuple[Preview | None, tuple[str, ...]]:
        """Matches of the rules that parse, and the problems of those that do not.

        Computed in the preview worker (:data:`digest.web.preview.WORKER`: one thread, a time budget
        per preview, a short queue), never on the event loop, so other pages answer meanwhile.
        """
        try:
            return await WORKER.run(preview_rules, rules_text, self.recent_index)
        except PreviewBusy:
            return None, (PREVIEW_BUSY,)
        except DigestError as exc:
            log.error("preview unavailable: %s", exc)
            return None, ("The preview is not available right now.",)

    async def preview(self, request: Request) -> Response:
        if not self.ip_previews.allow(self.client_ip(request), self.now_seconds()):
            html = render_page(
                "_preview.html", preview=None, preview_error=("Slow down a little…",), preview_days=PREVIEW_DAYS
            )
            return HTMLResponse(html, status_code=429, headers={"cache-control": "no-store"})
        form = await request.form()
        rules_text = str(form.get("rules", ""))[: MAX_RULES_CHARS + 1]
        preview, problems = await self.preview_for(rules_text)
        html = render_page("_preview.html", preview=preview, preview_error=problems, preview_days=PREVIEW_DAYS)
        if problems == (PREVIEW_BUSY,):  # the script asks again after a second
            return HTMLResponse(html, status_code=503, headers={"cache-control": "no-store", "retry-after": "1"})
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    # -- confirm ------------------------------------------------------------------------------
    async def confirm_request(self, request: Request, token: str | None) -> ConfirmRequest | Response:
        """What a confirm token asks for, or the page that says why it cannot."""
        try:
            data = self.token_data("confirm", token)
        except TokenError as exc:
            return self.bad_link(request, exc, "confirm")
        email, rules, key = data["e"], data.get("r"), data.get("s")
        layout = data.get("l", "full")  # links sent before layouts carry none
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or not isinstance(key, str):
            return self.bad_link(request, TokenError("malformed"), "confirm")
        if layout not in LAYOUTS:
            return self.bad_link(request, TokenError("malformed"), "confirm")
        check = await run_in_threadpool(check_rules, "\n".join(rules))
        if check.errors:
            return self.message(
                request,
                "These rules no longer work",
                " ".join(check.errors) + " Please sign up again.",
                400,
                show_home=True,
            )
        assert token is not None
        return ConfirmRequest(token, email, check.rules, str(key), layout)

    @staticmethod
    def confirm_outcome(store: Store, asked: ConfirmRequest) -> tuple[str, Subscriber | None]:
        """Is the link "ready" (the state it was sent for), "done" (already confirmed) or "used" (stale)?"""
        existing = store.subscriber(asked.email)
        if state_key(existing, store.departed_at(asked.email)) == asked.key:
            return "ready", existing
        if (
            existing is not None
            and existing.active
            and (existing.rules, existing.layout) == (asked.rules, asked.layout)
        ):
            return "done", existing  # a second click on the same link
        return "used", existing

    def confirm_page(
        self, request: Request, asked: ConfirmRequest, existing: Subscriber | None, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        context: dict[str, Any] = {
            "email": asked.email,
            "rules": asked.rules,
            "layout": asked.layout,
            "token": asked.token,
            "already_subscribed": existing is not None and existing.active,
            "form_error": None,
        }
        context.update(extra)
        return self.page(request, "confirm.html", status=status, **context)

    def confirm_answer(
        self, request: Request, asked: ConfirmRequest, outcome: str, subscriber: Subscriber | None
    ) -> Response:
        manage_url = "/manage?" + urlencode({"token": self.signer.sign("manage", asked.email)})
        if outcome == "used" and subscriber is None:
            return self.message(
                request,
                "This link no longer applies",
                "This address was unsubscribed after the link was sent, so the link cannot subscribe it again. "
                "To subscribe, sign up on the front page.",
                409,
                show_home=True,
            )
        if outcome == "used":
            return self.message(
                request,
                "This link was already used",
                "Your subscription changed after this link was sent, so it no longer applies. "
                "You can see and change your rules on your subscription page.",
                409,
                action_url=manage_url,
                action_label="Manage my subscription",
            )
        assert subscriber is not None
        return self.page(
            request,
            "confirmed.html",
            subscriber=subscriber,
            manage_url=manage_url,
            lookback_days=self.settings.sources.hf_papers.lookback_days,
        )

    async def confirm(self, request: Request) -> Response:
        """The link in the email: shows the rules and a Confirm button, and changes nothing (GET, HEAD)."""
        asked = await self.confirm_request(request, request.query_params.get("token"))
        if not isinstance(asked, ConfirmRequest):
            return asked
        outcome, existing = await self.read(lambda store: self.confirm_outcome(store, asked))
        if outcome == "ready":
            return self.confirm_page(request, asked, existing)
        return self.confirm_answer(request, asked, outcome, existing)

    async def confirm_post(self, request: Request) -> Response:
        """The Confirm button: the only request that subscribes."""
        form = await request.form()
        asked = await self.confirm_request(request, str(form.get("token", "")))
        if not isinstance(asked, ConfirmRequest):
            return asked
        problem = self.form_problem(request, form)
        if problem:
            existing = await self.read(lambda store: store.subscriber(asked.email))
            return self.confirm_page(request, asked, existing, 400, form_error=problem)
        now = self.clock()

        def change(store: Store) -> tuple[str, Subscriber | None]:
            outcome, existing = self.confirm_outcome(store, asked)
            if outcome != "ready":
                return outcome, existing
            updated = confirmed(existing, asked.email, asked.rules, now, asked.layout)
            store.save_subscriber(updated)
            return "done", updated

        try:
            outcome, subscriber = await self.write(change)
        except Busy:
            existing = await self.read(lambda store: store.subscriber(asked.email))
            return self.retry_later(self.confirm_page(request, asked, existing, 503, form_error=BUSY))
        return self.confirm_answer(request, asked, outcome, subscriber)

    # -- manage -------------------------------------------------------------------------------
    def manage_page(
        self, request: Request, token: str, subscriber: Subscriber, status: int = 200, **extra: Any
    ) -> Response:
        context: dict[str, Any] = {
            "token": token,
            "subscriber": subscriber,
            "rules_text": "\n".join(subscriber.rules),
            "layout": subscriber.layout,
            "rule_errors": (),
            "notice": None,
            "form_error": None,
            "unsubscribe_url": "/unsubscribe?"
            + urlencode({"token": self.signer.sign("unsubscribe", subscriber.email)}),
        }
        context.update(extra)
        return self.page(request, "manage.html", status=status, **context)

    def not_subscribed(self, request: Request) -> HTMLResponse:
        return self.message(
            request,
            "Not subscribed",
            "This address is not subscribed (any more). You can subscribe again from the front page.",
            404,
            show_home=True,
        )

    async def manage(self, request: Request) -> Response:
        token = request.query_params.get("token")
        try:
            email = self.token_data("manage", token)["e"]
        except TokenError as exc:
            return self.bad_link(request, exc, "manage")
        assert token is not None
        subscriber = await self.read(lambda store: store.subscriber(email))
        if subscriber is None:
            return self.not_subscribed(request)
        done = request.query_params.get("done", "")
        return self.manage_page(request, token, subscriber, notice=MANAGE_NOTICES.get(done) or None)

    async def manage_post(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token", ""))
        try:
            email = self.token_data("manage", token)["e"]
        except TokenError as exc:
            return self.bad_link(request, exc, "manage")
        action = str(form.get("action", ""))
        rules_text = str(form.get("rules", ""))
        layout = form_layout(form.get("layout")) if "layout" in form else None  # None: keep it
        current = await self.read(lambda store: store.subscriber(email))
        if current is None:
            return self.not_subscribed(request)
        if action not in ("save", "pause", "resume"):
            return self.manage_page(request, token, current, 400, form_error="Choose one of the buttons.")
        problem = self.form_problem(request, form)
        if problem:
            return self.manage_page(
                request,
                token,
                current,
                400,
                rules_text=rules_text if action == "save" else "\n".join(current.rules),
                form_error=problem,
            )
        check = await run_in_threadpool(check_rules, rules_text)
        if action == "save" and check.errors:
            return self.manage_page(
                request,
                token,
                current,
                400,
                rules_text=rules_text,
                layout=layout or current.layout,
                rule_errors=check.errors,
            )

        def change(store: Store) -> bool:
            subscriber = store.subscriber(email)
            if subscriber is None:
                return False
            if action == "save":
                subscriber = with_rules(subscriber, check.rules, layout)
            elif action == "pause":
                subscriber = paused(subscriber)
            else:
                subscriber = resumed(subscriber)
            store.save_subscriber(subscriber)
            return True

        try:
            found = await self.write(change)
        except Busy:
            kept = rules_text if action == "save" else "\n".join(current.rules)
            return self.retry_later(self.manage_page(request, token, current, 503, rules_text=kept, form_error=BUSY))
        if not found:
            return self.not_subscribed(request)
        done = {"save": "saved", "pause": "paused", "resume": "resumed"}[action]
        return RedirectResponse("/manage?" + urlencode({"token": token, "done": done}), status_code=303)

    # -- unsubscribe --------------------------------------------------------------------------
    def unsubscribe_page(
        self,
        request: Request,
        token: str,
        email: str,
        subscribed: bool,
        status: int = 200,
        form_error: str | None = None,
    ) -> HTMLResponse:
        return self.page(
            request,
            "unsubscribe.html",
            status=status,
            email=email,
            subscribed=subscribed,
            form_error=form_error,
            action_url="/unsubscribe?" + urlencode({"token": token}),
        )

    async def unsubscribe(self, request: Request) -> Response:
        token = request.query_params.get("token")
        try:
            email = self.token_data("unsubscribe", token)["e"]
        except TokenError as exc:
            return self.bad_link(request, exc, "unsubscribe")
        assert token is not None
        subscriber = await self.read(lambda store: store.subscriber(email))
        return self.unsubscribe_page(request, token, email, subscriber is not None)

    async def unsubscribe_post(self, request: Request) -> Response:
        """The button, and the RFC 8058 one-click POST (``List-Unsubscribe=One-Click``, from a mail server).

        The signed token in the URL is what authorizes. The page's button also needs its form token
        and a request no browser marks as cross-site (no cookie: it works with cookies off); a POST
        with neither that nor the one-click body gets the page again, with its button.
        """
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == ONE_CLICK
        token = request.query_params.get("token")
        try:
            email = self.token_data("unsubscribe", token)["e"]
        except TokenError as exc:
            if one_click:
                return PlainTextResponse("This unsubscribe link is not valid.\n", status_code=400)
            return self.bad_link(request, exc, "unsubscribe")
        assert token is not None
        problem = None if one_click else self.form_problem(request, form)
        if problem:
            subscriber = await self.read(lambda store: store.subscriber(email))
            if problem == FORM_EXPIRED:
                problem = "This page had expired, so nothing was done. Press “Unsubscribe” again."
            return self.unsubscribe_page(request, token, email, subscriber is not None, 400, problem)
        # Never "busy": while another process holds the store, it is recorded beside it (departures).
        await self.write(lambda store: leave(store, email), departure=email)
        log.info("unsubscribed an address through the web (%s)", "one-click" if one_click else "page")
        if one_click:
            return PlainTextResponse("You are unsubscribed.\n")
        return self.page(request, "unsubscribed.html", email=email)

    # -- archived digests ---------------------------------------------------------------------
    async def digest(self, request: Request) -> Response:
        digest_id = request.path_params["digest_id"]
        try:
            data = self.token_data("digest", request.query_params.get("token"))
        except TokenError as exc:
            return self.bad_link(request, exc, "digest")
        if not DIGEST_ID.fullmatch(digest_id) or data.get("d") != digest_id:
            return self.bad_link(request, TokenError("another digest"), "digest")
        path: Path = self.settings.data_dir / "archive" / f"{digest_id}.html"
        try:
            html = await run_in_threadpool(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            return self.message(
                request, "Digest not found", "This digest is no longer kept on this server.", 404, show_home=True
            )
        headers = {"content-security-policy": ARCHIVE_CSP, "cache-control": "private, max-age=3600"}
        return HTMLResponse(without_self_links(html, digest_id), headers=headers)

    async def favicon(self, request: Request) -> Response:
        """Browsers ask for ``/favicon.ico`` on pages that name no icon (an archived digest): the SVG."""
        icon = await run_in_threadpool((static_dir() / FAVICON).read_bytes)
        return Response(icon, media_type="image/svg+xml", headers={"cache-control": "public, max-age=86400"})

    # -- errors -------------------------------------------------------------------------------
    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        titles = {404: "Page not found", 405: "Not allowed"}
        title = titles.get(status, "Something went wrong")
        return self.message(request, title, "There is nothing to see at this address.", status, show_home=True)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """No stack trace to the browser: a plain page; the details go to the log (uvicorn logs it)."""
        html = render_page(
            "message.html",
            title="Something went wrong",
            text="Something went wrong on our side, and what you sent may not have been saved. "
            "The error is logged for the operator; please try again later.",
            csrf="",
            csrf_field=CSRF_FIELD,
            show_home=True,
            site_name=self.settings.site_name,
        )
        return HTMLResponse(html, status_code=500, headers=dict(SECURITY_HEADERS))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/check-inbox", self.check_inbox, methods=["GET"]),
            Route("/preview", self.preview, methods=["POST"]),
            Route("/confirm", self.confirm, methods=["GET"]),
            Route("/confirm", self.confirm_post, methods=["POST"]),
            Route("/manage", self.manage, methods=["GET"]),
            Route("/manage", self.manage_post, methods=["POST"]),
            Route("/unsubscribe", self.unsubscribe, methods=["GET"]),
            Route("/unsubscribe", self.unsubscribe_post, methods=["POST"]),
            Route("/digest/{digest_id}", self.digest, methods=["GET"]),
            Route("/favicon.ico", self.favicon, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
        ]


def leave(store: Store, email: str) -> bool:
    """Unsubscribe ``email``; nothing is written when it left already (a one-click replayed at
    will must not grow the journal)."""
    if store.subscriber(email) is None and store.departed_at(email) is not None:
        return False
    return store.remove_subscriber(email)


def without_self_links(html: str, digest_id: str) -> str:
    """An archived digest as its web page: without the email's links to this very page.

    The archive is the email's HTML, whose "View in a browser" and "View online" links point here;
    in the browser they only reload the page. Each ``<a>`` whose ``href`` is this digest's archive
    URL goes, with the " · " that separated it from its neighbour, or its whole paragraph when it
    was alone in one. Matching the URL rather than a marker in the template keeps working for
    digests archived before, and whatever the email's wording.
    """
    link = rf'<a\b[^>]*\bhref="[^"]*/digest/{re.escape(digest_id)}\?[^"]*"[^>]*>(?:(?!</a>).)*</a>'
    separator = r"\s*(?:&#183;|&middot;|·)\s*"
    alone = rf"<p\b[^>]*>\s*{link}\s*</p>"
    return re.sub(rf"{alone}|{separator}{link}|{link}(?:{separator})?", "", html, flags=re.S)


class TokenRedactingFilter(logging.Filter):
    """Access logs print request paths; links carry tokens, which must never reach a log.

    A parameter is judged by its decoded name (``%74oken=`` is read as ``token=`` by the app too),
    and its whole value goes, whatever it holds.
    """

    PARAMETER = re.compile(r"([?&;])([^=&;\s\"]*)=([^&;\s\"]*)")
    SECRET_NAMES = frozenset({"token", "t"})
    # What a signed link token looks like (digest.signing: payload.timestamp.signature, URL-safe
    # base64), wherever it stands: ``?token%3D…``, ``?…`` alone or in the path still carry one.
    TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")

    @classmethod
    def redact(cls, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = unquote_plus(match.group(2)).strip().lower()
            return f"{match.group(1)}{match.group(2)}=[redacted]" if name in cls.SECRET_NAMES else match.group(0)

        text = cls.TOKEN_SHAPE.sub("[redacted]", cls.PARAMETER.sub(one, text))
        if cls.TOKEN_SHAPE.search(unquote_plus(text)):  # percent-encoded inside: drop every query
            text = re.sub(r"\?\S*", "?[redacted]", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True


def redact_tokens_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, TokenRedactingFilter) for f in access.filters):
        access.addFilter(TokenRedactingFilter())


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    today: Callable[[], date] | None = None,
    limits: WebLimits | None = None,
    keeper: StoreKeeper | None = None,
) -> Starlette:
    front = WebFront(
        settings, clock, today or (lambda: today_in(settings.schedule.timezone)), limits or WebLimits(), keeper
    )
    redact_tokens_in_access_log()

    def too_large() -> ASGIApp:
        return PlainTextResponse("The form is too large.\n", status_code=413)

    app = Starlette(
        routes=[
            *health.routes(settings, lambda: front.keeper.read(lambda store: store.cycles(last=50))),
            *metrics.routes(settings, front.keeper.read),
            *front.routes(),
        ],
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES, too_large=too_large),
        ],
        exception_handlers={HTTPException: front.http_error, Exception: front.server_error},
    )
    app.router.redirect_slashes = False  # Starlette's would take the Location's host from the Host header
    app.state.front = front
    return app
