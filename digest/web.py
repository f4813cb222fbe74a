"""The web front served by ``digest serve``: sign up (double opt-in), manage, unsubscribe, archive.

Pages (Jinja2, ``templates/web``) work without JavaScript; one same-origin script adds the live
preview. The pure decisions live in :mod:`digest.subscriptions` (form checks, state changes),
:mod:`digest.preview`, :mod:`digest.ratelimit` and :mod:`digest.confirmation`; this module is the
I/O around them: it reads the store, takes the store lock to write (a running cycle holds it: after
a few seconds the person gets a friendly "busy, try again"), sends the confirmation email and
answers HTTP.

Every link that acts on a subscription carries a token signed for that address and purpose
(:mod:`digest.tokens`); forms also carry a CSRF token (:mod:`digest.websecurity`), except the
RFC 8058 one-click unsubscribe, which mail providers POST without cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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

from digest import health
from digest.confirmation import build_confirmation
from digest.errors import CycleLockedError, DeliveryError, DigestError
from digest.mailer import make_mailer
from digest.models import Subscriber
from digest.pages import render_page, static_dir
from digest.preview import PREVIEW_DAYS, Preview, build_preview
from digest.ratelimit import RateLimit
from digest.rules import ItemIndex, parse_rules
from digest.runner import today_in, utc_now
from digest.settings import Settings
from digest.storage import write_atomically
from digest.store import STORE_FILE, Store, open_store
from digest.subscriptions import (
    MAX_RULES_CHARS,
    check_rules,
    check_signup,
    confirmed,
    paused,
    resumed,
    state_key,
    with_rules,
)
from digest.tokens import MAX_AGE_SECONDS, Purpose, Signer, TokenError
from digest.websecurity import (
    ARCHIVE_CSP,
    CSRF_COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    csrf_ok,
    csrf_token,
    new_nonce,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024
LOCK_WAIT_SECONDS = 3.0
LIMITS_FILE = "web-limits.json"
DIGEST_ID = re.compile(r"[0-9a-f]{20}")
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
ONE_CLICK = "One-Click"
MANAGE_NOTICES = {"saved": "Your rules are saved.", "paused": "Paused: no digests until you resume.", "resumed": ""}


@dataclass(frozen=True, slots=True)
class WebLimits:
    """How often the form may send mail: per address (a stranger's inbox) and per client IP."""

    mails_per_address: int = 1
    address_window_seconds: float = 3600
    signups_per_ip: int = 10
    ip_window_seconds: float = 3600
    previews_per_ip: int = 120
    preview_window_seconds: float = 60


class Busy(Exception):
    """The store lock is held (a cycle is running); the person should try again shortly."""


class WebFront:
    """The handlers, with what they share: settings, signer, limits, clock and the preview index."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime],
        today: Callable[[], date],
        limits: WebLimits,
    ) -> None:
        self.settings = settings
        self.secret = settings.resolved_secret_key()
        self.signer = Signer(self.secret)
        self.clock = clock
        self.today = today
        self.limits = limits
        self.address_mails = RateLimit(limits.mails_per_address, limits.address_window_seconds)
        self.ip_signups = RateLimit(limits.signups_per_ip, limits.ip_window_seconds)
        self.ip_previews = RateLimit(limits.previews_per_ip, limits.preview_window_seconds)
        self.limits_path = settings.data_dir / LIMITS_FILE
        self._load_limits()
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
        """Render a page with a CSRF token tied to the visitor's cookie (set when missing)."""
        nonce = request.cookies.get(CSRF_COOKIE)
        fresh = nonce is None or not NONCE.fullmatch(nonce)
        if fresh:
            nonce = new_nonce()
        assert nonce is not None
        html = render_page(template, csrf=csrf_token(self.secret, nonce), csrf_field=CSRF_FIELD, **context)
        response = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                nonce,
                max_age=7 * 24 * 3600,
                httponly=True,
                samesite="lax",
                secure=self.settings.public_url.startswith("https://"),
            )
        return response

    def message(self, request: Request, title: str, text: str, status: int, **extra: Any) -> HTMLResponse:
        return self.page(request, "message.html", status=status, title=title, text=text, **extra)

    def csrf_valid(self, request: Request, form: FormData) -> bool:
        return csrf_ok(self.secret, request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD))

    def client_ip(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

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

    def write(self, change: Callable[[Store], Any]) -> Any:
        """Run ``change`` on the store under the lock (in a worker thread); :class:`Busy` if a cycle holds it."""
        try:
            with open_store(self.settings.data_dir, wait_seconds=LOCK_WAIT_SECONDS) as store:
                return change(store)
        except CycleLockedError as exc:
            raise Busy() from exc

    def busy(self, request: Request) -> HTMLResponse:
        response = self.message(
            request,
            "Busy, try again",
            "The daily digest is being sent right now, so this change could not be saved. "
            "Nothing was lost: please try again in a minute.",
            503,
            show_home=False,
        )
        response.headers["retry-after"] = "30"
        return response

    def read_store(self) -> Store:
        return Store(self.settings.data_dir, writable=False)

    # -- the sign-up form ---------------------------------------------------------------------
    def form_page(self, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        values = {
            "email": "",
            "rules_text": "",
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
        kept: dict[str, Any] = {"email": email_text, "rules_text": rules_text}
        if form.get("action") == "preview":
            preview, problems = await self.preview_for(rules_text)
            return self.form_page(request, **kept, preview=preview, preview_error=problems)
        if not self.csrf_valid(request, form):
            return self.form_page(
                request, 400, **kept, form_error="This form had expired. Your entries are kept: please send it again."
            )
        check = check_signup(email_text, rules_text)
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
        address_key = hmac.new(self.secret.encode(), check.email.encode(), hashlib.sha256).hexdigest()[:32]
        if self.address_mails.allow(address_key, now):
            try:
                await run_in_threadpool(self.send_confirmation, check.email, check.rules)
            except DeliveryError as exc:
                self.address_mails.forget_last(address_key)
                log.error("confirmation email not sent: %s", exc)
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
                return self.message(request, "Something went wrong", "Please try again later.", 500, show_home=True)
        # The same answer whether the address is new, subscribed, or was mailed within the hour.
        window_minutes = round(self.limits.address_window_seconds / 60)
        return self.page(request, "check_inbox.html", window_minutes=window_minutes)

    def send_confirmation(self, email: str, rules: Sequence[str]) -> None:
        """Mail the confirm link; runs in a worker thread (the store read and SMTP block)."""
        existing = self.read_store().subscriber(email)
        token = self.signer.sign("confirm", email, r=list(rules), s=state_key(existing))
        max_age = MAX_AGE_SECONDS["confirm"] or 0
        message = build_confirmation(
            to_address=email,
            rules=rules,
            confirm_url=self.link("/confirm", token=token),
            site_url=self.link("/"),
            from_address=self.settings.smtp.from_address,
            already_subscribed=existing is not None and existing.active,
            valid_days=max_age // 86400,
            now=self.clock(),
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
        """Keep the per-address limit across restarts (addresses are stored only as keyed hashes)."""
        payload = {"address_mails": self.address_mails.snapshot(self.now_seconds())}
        try:
            write_atomically(self.limits_path, json.dumps(payload).encode("utf-8"))
        except OSError as exc:
            log.warning("could not save the sign-up rate limits to %s: %s", self.limits_path, exc)

    # -- live preview -------------------------------------------------------------------------
    def recent_index(self) -> ItemIndex:
        """The index of the last days' stored papers, rebuilt only when the store file or the day changes."""
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
                items = self.read_store().items_listed_between(start, today)
                self._index, self._index_key = ItemIndex(items), key
            return self._index

    async def preview_for(self, rules_text: str) -> tuple[Preview | None, tuple[str, ...]]:
        """Matches of the rules that parse, and the problems of those that do not."""
        check = check_rules(rules_text)
        good = [r for r in check.rules if _parses(r)]
        if not good:
            return None, check.errors if rules_text.strip() else ()
        try:
            index = await run_in_threadpool(self.recent_index)
        except DigestError as exc:
            log.error("preview unavailable: %s", exc)
            return None, ("The preview is not available right now.",)
        try:
            rules = parse_rules(good)
        except DigestError:  # a check across the rules as a whole; check_rules has already said which
            return None, check.errors
        return build_preview(index, rules), check.errors

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
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    # -- confirm ------------------------------------------------------------------------------
    async def confirm(self, request: Request) -> Response:
        try:
            data = self.token_data("confirm", request.query_params.get("token"))
        except TokenError as exc:
            return self.bad_link(request, exc, "confirm")
        email, rules, key = data["e"], data.get("r"), data.get("s")
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or not isinstance(key, str):
            return self.bad_link(request, TokenError("malformed"), "confirm")
        check = check_rules("\n".join(rules))
        if check.errors:
            return self.message(
                request, "These rules no longer work", " ".join(check.errors) + " Please sign up again.", 400
            )
        now = self.clock()

        def change(store: Store) -> tuple[str, Subscriber | None]:
            existing = store.subscriber(email)
            if state_key(existing) == key:
                updated = confirmed(existing, email, check.rules, now)
                store.save_subscriber(updated)
                return "confirmed", updated
            if existing is not None and existing.active and existing.rules == check.rules:
                return "confirmed", existing  # a second click on the same link
            return "used", existing

        try:
            outcome, subscriber = await run_in_threadpool(self.write, change)
        except Busy:
            return self.busy(request)
        manage_url = "/manage?" + urlencode({"token": self.signer.sign("manage", email)})
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

    # -- manage -------------------------------------------------------------------------------
    def manage_page(
        self, request: Request, token: str, subscriber: Subscriber, status: int = 200, **extra: Any
    ) -> Response:
        context: dict[str, Any] = {
            "token": token,
            "subscriber": subscriber,
            "rules_text": "\n".join(subscriber.rules),
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
        subscriber = (await run_in_threadpool(self.read_store)).subscriber(email)
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
        current = (await run_in_threadpool(self.read_store)).subscriber(email)
        if current is None:
            return self.not_subscribed(request)
        if action not in ("save", "pause", "resume"):
            return self.manage_page(request, token, current, 400, form_error="Choose one of the buttons.")
        if not self.csrf_valid(request, form):
            return self.manage_page(
                request,
                token,
                current,
                400,
                rules_text=rules_text if action == "save" else "\n".join(current.rules),
                form_error="This form had expired. Your entries are kept: please send it again.",
            )
        check = check_rules(rules_text)
        if action == "save" and check.errors:
            return self.manage_page(request, token, current, 400, rules_text=rules_text, rule_errors=check.errors)

        def change(store: Store) -> bool:
            subscriber = store.subscriber(email)
            if subscriber is None:
                return False
            if action == "save":
                subscriber = with_rules(subscriber, check.rules)
            elif action == "pause":
                subscriber = paused(subscriber)
            else:
                subscriber = resumed(subscriber)
            store.save_subscriber(subscriber)
            return True

        try:
            found = await run_in_threadpool(self.write, change)
        except Busy:
            return self.busy(request)
        if not found:
            return self.not_subscribed(request)
        done = {"save": "saved", "pause": "paused", "resume": "resumed"}[action]
        return RedirectResponse("/manage?" + urlencode({"token": token, "done": done}), status_code=303)

    # -- unsubscribe --------------------------------------------------------------------------
    async def unsubscribe(self, request: Request) -> Response:
        token = request.query_params.get("token")
        try:
            email = self.token_data("unsubscribe", token)["e"]
        except TokenError as exc:
            return self.bad_link(request, exc, "unsubscribe")
        subscriber = (await run_in_threadpool(self.read_store)).subscriber(email)
        return self.page(
            request,
            "unsubscribe.html",
            email=email,
            subscribed=subscriber is not None,
            action_url="/unsubscribe?" + urlencode({"token": token or ""}),
        )

    async def unsubscribe_post(self, request: Request) -> Response:
        """The button, and the RFC 8058 one-click POST (``List-Unsubscribe=One-Click``, no cookies).

        The signed token in the URL is what authorizes; the page's form also carries a CSRF token,
        and a POST with neither the one-click body nor a valid CSRF token is refused.
        """
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == ONE_CLICK
        try:
            email = self.token_data("unsubscribe", request.query_params.get("token"))["e"]
        except TokenError as exc:
            if one_click:
                return PlainTextResponse("This unsubscribe link is not valid.\n", status_code=400)
            return self.bad_link(request, exc, "unsubscribe")
        if not one_click and not self.csrf_valid(request, form):
            return self.message(
                request,
                "Please press the button again",
                "This form had expired. Go back, reload the page and press “Unsubscribe” again.",
                400,
            )
        try:
            await run_in_threadpool(self.write, lambda store: store.remove_subscriber(email))
        except Busy:
            if one_click:
                return PlainTextResponse("Busy, try again.\n", status_code=503, headers={"retry-after": "30"})
            return self.busy(request)
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
        return HTMLResponse(html, headers=headers)

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
            text="Something went wrong on our side. Nothing you sent was lost; please try again later.",
            csrf="",
            csrf_field=CSRF_FIELD,
            show_home=True,
        )
        return HTMLResponse(html, status_code=500, headers=dict(SECURITY_HEADERS))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/preview", self.preview, methods=["POST"]),
            Route("/confirm", self.confirm, methods=["GET"]),
            Route("/manage", self.manage, methods=["GET"]),
            Route("/manage", self.manage_post, methods=["POST"]),
            Route("/unsubscribe", self.unsubscribe, methods=["GET"]),
            Route("/unsubscribe", self.unsubscribe_post, methods=["POST"]),
            Route("/digest/{digest_id}", self.digest, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
        ]


def _parses(rule: str) -> bool:
    try:
        parse_rules([rule])
    except DigestError:
        return False
    return True


class TokenRedactingFilter(logging.Filter):
    """Access logs print request paths; links carry tokens, which must never reach a log."""

    PATTERN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1[redacted]", record.msg)
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
) -> Starlette:
    front = WebFront(settings, clock, today or (lambda: today_in(settings)), limits or WebLimits())
    redact_tokens_in_access_log()

    def too_large() -> ASGIApp:
        return PlainTextResponse("The form is too large.\n", status_code=413)

    app = Starlette(
        routes=[*health.routes(settings), *front.routes()],
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES, too_large=too_large),
        ],
        exception_handlers={HTTPException: front.http_error, Exception: front.server_error},
    )
    app.state.front = front
    return app
