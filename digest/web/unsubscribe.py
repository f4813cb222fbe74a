"""``/unsubscribe``: the page with its button (GET changes nothing), and the POST of that button or of a
mail provider's RFC 8058 one-click (``List-Unsubscribe=One-Click``, sent from its servers).

The signed token in the URL is what authorizes. The page's button also needs its form token and a
request no browser marks as cross-site (no cookie: it works with cookies off); a POST with neither
that nor the one-click body gets the page again, with its button. An unsubscribe is never "busy":
while another process holds the store, it is recorded beside it (:mod:`digest.state.departures`).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from digest.errors import TokenError
from digest.web.forms import FORM_EXPIRED
from digest.web.front import Front

log = logging.getLogger(__name__)

ONE_CLICK = "One-Click"


class Unsubscribe:
    """The unsubscribe page and its POST."""

    def __init__(self, front: Front) -> None:
        self.front = front

    def page(
        self, token: str, email: str, subscribed: bool, status: int = 200, form_error: str | None = None
    ) -> HTMLResponse:
        return self.front.page(
            "unsubscribe.html",
            status=status,
            email=email,
            subscribed=subscribed,
            form_error=form_error,
            action_url="/unsubscribe?" + urlencode({"token": token}),
        )

    async def show(self, request: Request) -> Response:
        held = await self.front.link_holder(request, "unsubscribe")
        if isinstance(held, Response):
            return held
        token, email, subscriber = held
        return self.page(token, email, subscriber is not None)

    async def post(self, request: Request) -> Response:
        """The button, and the one-click POST: see the module's docstring for what each needs."""
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == ONE_CLICK
        token = request.query_params.get("token")
        try:
            email = self.front.token_data("unsubscribe", token)["e"]
        except TokenError as exc:
            if one_click:
                return PlainTextResponse("This unsubscribe link is not valid.\n", status_code=400)
            return self.front.bad_link(exc, "unsubscribe")
        assert token is not None
        problem = None if one_click else self.front.form_problem(request, form)
        if problem:
            subscriber = await self.front.subscriber(email)
            if problem == FORM_EXPIRED:
                problem = "This page had expired, so nothing was done. Press “Unsubscribe” again."
            return self.page(token, email, subscriber is not None, 400, problem)
        await self.front.leave(email)
        log.info("unsubscribed an address through the web (%s)", "one-click" if one_click else "page")
        if one_click:
            return PlainTextResponse("You are unsubscribed.\n")
        return self.front.page("unsubscribed.html", email=email)
