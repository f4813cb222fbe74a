"""``/manage``: a subscriber's page (GET shows the rules and layout) and its Save, Pause and Resume buttons.

The signed manage link is what authorizes; the buttons also need a form token and a request no
browser marks as cross-site. A save that fails the rule checks changes nothing and shows the rules
as typed, with their problems.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from digest.errors import CycleLockedError, TokenError
from digest.models import Subscriber
from digest.state.backend import StoreBackend
from digest.state.subscriptions import check_rules, paused, resumed, with_rules
from digest.web.forms import BUSY, MANAGE_ACTIONS, ManageForm
from digest.web.front import Front

NOTICES = {"saved": "Your changes are saved.", "paused": "Paused: no digests until you resume.", "resumed": ""}
DONE = {"save": "saved", "pause": "paused", "resume": "resumed"}


def change_subscription(
    store: StoreBackend, email: str, action: str, rules: tuple[str, ...], layout: str | None
) -> bool:
    """Apply a manage button (``save``, ``pause`` or ``resume``) to ``email``; False if it left meanwhile."""
    subscriber = store.subscriber(email)
    if subscriber is None:
        return False
    if action == "save":
        subscriber = with_rules(subscriber, rules, layout)
    elif action == "pause":
        subscriber = paused(subscriber)
    else:
        subscriber = resumed(subscriber)
    store.save_subscriber(subscriber)
    return True


class Manage:
    """The manage page and its form."""

    def __init__(self, front: Front) -> None:
        self.front = front

    def page(self, token: str, subscriber: Subscriber, status: int = 200, **extra: Any) -> Response:
        context: dict[str, Any] = {
            "token": token,
            "subscriber": subscriber,
            "rules_text": "\n".join(subscriber.rules),
            "layout": subscriber.layout,
            "rule_errors": (),
            "notice": None,
            "form_error": None,
            "unsubscribe_url": "/unsubscribe?"
            + urlencode({"token": self.front.signer.sign("unsubscribe", subscriber.email)}),
        }
        context.update(extra)
        return self.front.page("manage.html", status=status, **context)

    def not_subscribed(self) -> HTMLResponse:
        return self.front.message(
            "Not subscribed",
            "This address is not subscribed (any more). You can subscribe again from the front page.",
            404,
            show_home=True,
        )

    async def show(self, request: Request) -> Response:
        held = await self.front.link_holder(request, "manage")
        if isinstance(held, Response):
            return held
        token, _, subscriber = held
        if subscriber is None:
            return self.not_subscribed()
        done = request.query_params.get("done", "")
        return self.page(token, subscriber, notice=NOTICES.get(done) or None)

    async def post(self, request: Request) -> Response:
        raw = await request.form()
        form = ManageForm.read(raw)
        try:
            email = self.front.token_data("manage", form.token)["e"]
        except TokenError as exc:
            return self.front.bad_link(exc, "manage")
        current = await self.front.read(lambda store: store.subscriber(email))
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
        if form.action == "save" and check.errors:
            layout = form.layout or current.layout
            return self.page(
                form.token, current, 400, rules_text=form.rules_text, layout=layout, rule_errors=check.errors
            )
        return check.rules

    async def apply(self, form: ManageForm, email: str, current: Subscriber, rules: tuple[str, ...]) -> Response:
        """Save the change, then redirect to the page with its notice (reloading it sends nothing)."""
        try:
            found = await self.front.write(
                lambda store: change_subscription(store, email, form.action, rules, form.layout)
            )
        except CycleLockedError:
            page = self.page(form.token, current, 503, rules_text=form.kept_rules(current.rules), form_error=BUSY)
            return self.front.retry_later(page)
        if not found:
            return self.not_subscribed()
        return RedirectResponse(
            "/manage?" + urlencode({"token": form.token, "done": DONE[form.action]}), status_code=303
        )
