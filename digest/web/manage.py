"""``/manage``: a subscriber's page (GET shows the rules and choices) and its Save, Pause, Resume and
"new feed address" buttons.

The signed manage link is what authorizes; the buttons also need a form token and a request no
browser marks as cross-site. A save that fails the rule checks changes nothing and shows the rules
as typed, with their problems.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from digest.errors import CycleLockedError, TokenError
from digest.models import Subscriber
from digest.state.backend import StoreBackend
from digest.state.preferences import Preferences
from digest.state.subscriptions import check_rules, paused, resumed, with_rules
from digest.web.feed import feed_url
from digest.web.feed_addresses import FeedAddresses
from digest.web.forms import BUSY, MANAGE_ACTIONS, ChoiceFields, ManageForm, choice_context
from digest.web.front import Front
from digest.web.suggestions import SuggestionWorker

NOTICES = {
    "saved": "Your changes are saved.",
    "paused": "Paused: no digests until you resume.",
    "resumed": "",
    "new-feed": "Your feed has a new address (below): put it in your feed reader. The old one no longer works.",
}
DONE = {"save": "saved", "pause": "paused", "resume": "resumed", "new-feed": "new-feed"}


def change_subscription(
    store: StoreBackend,
    email: str,
    action: str,
    rules: tuple[str, ...],
    layout: str | None,
    choices: ChoiceFields | None = None,
    service_zone: str = "UTC",
) -> bool:
    """Apply a manage button (``save``, ``pause``, ``resume`` or ``new-feed``) to ``email``; False if it
    left meanwhile. ``new-feed`` draws a new feed key, which retires the old feed address.

    A save's choices are applied over the subscriber as stored now, in the store's writer: two
    saves at once each land whole, the later one last. Fields the form had not (an old tab) stay.
    """
    subscriber = store.subscriber(email)
    if subscriber is None:
        return False
    if action == "save":
        base = Preferences.of(subscriber)
        chosen, _ = (choices or ChoiceFields()).chosen(replace(base, layout=layout or base.layout), service_zone)
        subscriber = with_rules(subscriber, rules, None, chosen)
    elif action == "pause":
        subscriber = paused(subscriber)
    elif action == "new-feed":
        subscriber = replace(subscriber, feed_key=secrets.token_urlsafe(16))
    else:
        subscriber = resumed(subscriber)
    store.save_subscriber(subscriber)
    return True


class Manage:
    """The manage page and its form."""

    def __init__(self, front: Front, feeds: FeedAddresses | None = None) -> None:
        self.front = front
        self.feeds = feeds  # the feed route's table: an address shown here is found at its first poll
        self.suggestions = SuggestionWorker(front)  # votes → rule changes, in a thread of their own

    def feed_url(self, subscriber: Subscriber) -> str:
        if self.feeds is not None:
            self.feeds.note(subscriber)
        return feed_url(self.front.signer, self.front.settings.public_url, subscriber)

    def page(self, token: str, subscriber: Subscriber, status: int = 200, **extra: Any) -> Response:
        context: dict[str, Any] = {
            "token": token,
            "subscriber": subscriber,
            "rules_text": "\n".join(subscriber.rules),
            "layout": subscriber.layout,
            "choices": ChoiceFields.of(Preferences.of(subscriber)),
            "choice_errors": (),
            "rule_errors": (),
            "notice": None,
            "form_error": None,
            "unsubscribe_url": "/unsubscribe?"
            + urlencode({"token": self.front.signer.sign("unsubscribe", subscriber.email)}),
            "feed_url": self.feed_url(subscriber),
        }
        context.update(extra)
        context.update(choice_context(self.front.settings.schedule, context["choices"]))
        return self.front.page("manage.html", status=status, **context)

    def not_subscribed(self) -> HTMLResponse:
        return self.front.message(
            "Not subscribed",
            "This address is not subscribed (any more). You can subscribe again from the front page.",
            404,
            show_home=True,
        )

    def too_many(self, request: Request, token: str | None) -> Response | None:
        """429 when this client used the page too often (each use reads the store, and may start
        suggestions); with a valid link it offers to unsubscribe, which is never limited."""
        front = self.front
        if front.limits.ip_manage.allow(front.client_ip(request), front.now_seconds()):
            return None
        extra: dict[str, str] = {}
        try:
            unsubscribe = front.signer.sign("unsubscribe", str(front.token_data("manage", token)["e"]))
            extra = {"action_url": "/unsubscribe?" + urlencode({"token": unsubscribe}), "action_label": "Unsubscribe"}
        except TokenError:
            pass
        text = "Too many requests from your network. Please wait a minute."
        response = front.message("Slow down", text, 429, **extra)
        response.headers["retry-after"] = "60"
        return response

    async def show(self, request: Request) -> Response:
        refused = self.too_many(request, request.query_params.get("token"))
        if refused is not None:
            return refused
        token = request.query_params.get("token")
        try:
            email = str(self.front.token_data("manage", token)["e"])
        except TokenError as exc:
            return self.front.bad_link(exc, "manage")
        assert token is not None
        subscriber, votes = await self.front.subscriber_with_votes(email)
        if subscriber is None:
            return self.not_subscribed()
        done = request.query_params.get("done", "")
        suggested = await self.suggestions.section(subscriber, votes)  # votes → rule changes (digest.web.suggestions)
        return self.page(token, subscriber, notice=NOTICES.get(done) or None, **suggested)

    async def post(self, request: Request) -> Response:
        raw = await request.form()
        form = ManageForm.read(raw)
        slow_down = self.too_many(request, form.token)
        if slow_down is not None:
            return slow_down
        try:
            email = self.front.token_data("manage", form.token)["e"]
        except TokenError as exc:
            return self.front.bad_link(exc, "manage")
        current = await self.front.subscriber(email)
        if current is None:
            return self.not_subscribed()
        refused = await self.refusal(request, raw, form, current)
        if isinstance(refused, Response):
            return refused
        return await self.apply(form, email, current, refused)

    async def refusal(
        self, request: Request, raw: FormData, form: ManageForm, current: Subscriber
    ) -> Response | tuple[str, ...]:
        """The page again when the post cannot be applied, else the rules it saves (checked)."""
        if form.action not in MANAGE_ACTIONS:
            return self.page(form.token, current, 400, form_error="Choose one of the buttons.")
        problem = self.front.form_problem(request, raw)
        if problem:
            return self.page(form.token, current, 400, rules_text=form.kept_rules(current.rules), form_error=problem)
        check = await run_in_threadpool(check_rules, form.rules_text)
        _, choice_errors = form.choices.chosen(Preferences.of(current), self.front.settings.schedule.timezone)
        if form.action == "save" and (check.errors or choice_errors):
            layout = form.layout or current.layout
            shown = form.choices.over(ChoiceFields.of(Preferences.of(current)))
            return self.page(
                form.token,
                current,
                400,
                rules_text=form.rules_text,
                layout=layout,
                rule_errors=check.errors,
                choices=shown,
                choice_errors=choice_errors,
            )
        return check.rules

    async def apply(self, form: ManageForm, email: str, current: Subscriber, rules: tuple[str, ...]) -> Response:
        """Save the change, then redirect to the page with its notice (reloading it sends nothing)."""
        try:
            zone = self.front.settings.schedule.timezone
            found = await self.front.write(
                lambda store: change_subscription(store, email, form.action, rules, form.layout, form.choices, zone)
            )
        except CycleLockedError:
            page = self.page(form.token, current, 503, rules_text=form.kept_rules(current.rules), form_error=BUSY)
            return self.front.retry_later(page)
        if not found:
            return self.not_subscribed()
        return RedirectResponse(
            "/manage?" + urlencode({"token": form.token, "done": DONE[form.action]}), status_code=303
        )
