"""``/confirm``: the link in the confirmation email (GET shows the rules) and its Confirm button (POST).

Mail scanners open every link of an email, so the link's page changes nothing; only the button's
POST subscribes. A confirm link fits only the state it was sent for
(:func:`digest.state.subscriptions.state_key`, which includes the last unsubscribe), so an old one
can never undo a later change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.clock import cron_trigger
from digest.cycle.rhythm import Rhythm, first_due, zone_of
from digest.errors import CycleLockedError, SubscriberError, TokenError
from digest.matching.syntax import upgraded_rules
from digest.models import LAYOUTS, Subscriber
from digest.settings import ScheduleSettings
from digest.state.backend import StoreBackend
from digest.state.preferences import Preferences
from digest.state.subscriptions import check_rules, confirmed, state_key
from digest.web.forms import BUSY
from digest.web.front import Front


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """A confirm token, read: the address, the rules asked for, and the state it was sent for."""

    token: str
    email: str
    rules: tuple[str, ...]
    key: str
    layout: str = "full"
    chosen: Preferences | None = None  # None: a link sent before the choices, the defaults with ``layout``

    @property
    def choices(self) -> Preferences:
        return self.chosen or Preferences(layout=self.layout)


def confirm_outcome(store: StoreBackend, asked: ConfirmRequest) -> tuple[str, Subscriber | None]:
    """Is the link "ready" (the state it was sent for), "done" (already confirmed) or "used" (stale)?"""
    existing = store.subscriber(asked.email)
    if state_key(existing, store.departed_at(asked.email)) == asked.key:
        return "ready", existing
    same = existing is not None and existing.rules == asked.rules and Preferences.of(existing) == asked.choices
    if existing is not None and existing.active and same:
        return "done", existing  # a second click on the same link
    return "used", existing


def chosen_in(choices: object, layout: str) -> Preferences | None:
    """The choices a confirm link carries (``p``: those not the defaults; links sent before the
    choices carry none), or None when they are not valid ones (a link signed with other limits)."""
    if not isinstance(choices, dict):
        return None
    try:
        return Preferences.read({**choices, "layout": layout})
    except SubscriberError:
        return None


DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def first_digest(subscriber: Subscriber, now: datetime, schedule: ScheduleSettings) -> dict[str, str]:
    """What the confirmed page says of the first digest: when, as the person reads it in the zone
    of their own rhythm ("Fri Dec 11 at 07:00 CET (Europe/Berlin)"; "" if none is found), how it
    is introduced, and the rhythm after it. The service's next run is the wrong answer for someone
    weekly or at their own hour."""
    trigger = cron_trigger(schedule.cron, schedule.timezone)
    rhythm = Rhythm.of(subscriber)
    due = first_due(subscriber, now, trigger)
    when = ""
    if due is not None:
        zone = zone_of(rhythm, trigger)
        local = due.astimezone(zone)
        name = local.tzname() or zone.key
        named = name if name == zone.key else f"{name} ({zone.key})"
        when = f"{local:%a %b} {local.day} at {local:%H:%M} {named}"
    at = "" if rhythm.hour is None else f" at {rhythm.hour:02d}:00"
    if rhythm.frequency == "weekly":
        return {"when": when, "intro": "on your day", "then": f"; then every {DAY_NAMES[rhythm.weekday]}{at}"}
    if rhythm.hour is not None:
        return {"when": when, "intro": "at your hour", "then": f"; then every day{at}"}
    return {"when": when, "intro": "with the next daily run", "then": ""}


class Confirm:
    """The confirm link's page and its button."""

    def __init__(self, front: Front) -> None:
        self.front = front

    async def request_of(self, token: str | None) -> ConfirmRequest | Response:
        """What a confirm token asks for, or the page that says why it cannot."""
        try:
            data = self.front.token_data("confirm", token)
        except TokenError as exc:
            return self.front.bad_link(exc, "confirm")
        email, rules, key = data["e"], data.get("r"), data.get("s")
        layout = data.get("l", "full")  # links sent before layouts carry none
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or not isinstance(key, str):
            return self.front.bad_link(TokenError("malformed"), "confirm")
        if layout not in LAYOUTS:
            return self.front.bad_link(TokenError("malformed"), "confirm")
        chosen = chosen_in(data.get("p", {}), layout)
        if chosen is None:
            return self.front.bad_link(TokenError("malformed"), "confirm")
        syntax = data.get("y", 1)  # links sent before ``-`` negated one word carry none
        if not isinstance(syntax, int):
            return self.front.bad_link(TokenError("malformed"), "confirm")
        check = await run_in_threadpool(check_rules, "\n".join(upgraded_rules(rules, syntax)))
        if check.errors:
            return self.front.message(
                "These rules no longer work", " ".join(check.errors) + " Please sign up again.", 400, show_home=True
            )
        assert token is not None
        return ConfirmRequest(token, email, check.rules, str(key), layout, chosen)

    def page(self, asked: ConfirmRequest, existing: Subscriber | None, status: int = 200, **extra: Any) -> HTMLResponse:
        context: dict[str, Any] = {
            "email": asked.email,
            "rules": asked.rules,
            "layout": asked.layout,
            "chosen": asked.choices.describe(),
            "token": asked.token,
            "already_subscribed": existing is not None and existing.active,
            "form_error": None,
        }
        context.update(extra)
        return self.front.page("confirm.html", status=status, **context)

    def answer(self, asked: ConfirmRequest, outcome: str, subscriber: Subscriber | None) -> Response:
        manage_url = "/manage?" + urlencode({"token": self.front.signer.sign("manage", asked.email)})
        if outcome == "used" and subscriber is None:
            return self.front.message(
                "This link no longer applies",
                "This address was unsubscribed after the link was sent, so the link cannot subscribe it again. "
                "To subscribe, sign up on the front page.",
                409,
                show_home=True,
            )
        if outcome == "used":
            return self.front.message(
                "This link was already used",
                "Your subscription changed after this link was sent, so it no longer applies. "
                "You can see and change your rules on your subscription page.",
                409,
                action_url=manage_url,
                action_label="Manage my subscription",
            )
        assert subscriber is not None
        return self.front.page(
            "confirmed.html",
            subscriber=subscriber,
            manage_url=manage_url,
            lookback_days=self.front.settings.lookback_days,
            first=first_digest(subscriber, self.front.clock(), self.front.settings.schedule),
        )

    async def show(self, request: Request) -> Response:
        """The link in the email: shows the rules and a Confirm button, and changes nothing (GET, HEAD)."""
        asked = await self.request_of(request.query_params.get("token"))
        if not isinstance(asked, ConfirmRequest):
            return asked
        outcome, existing = await self.front.read(lambda store: confirm_outcome(store, asked))
        if outcome == "ready":
            return self.page(asked, existing)
        return self.answer(asked, outcome, existing)

    async def post(self, request: Request) -> Response:
        """The Confirm button: the only request that subscribes."""
        form = await request.form()
        asked = await self.request_of(str(form.get("token", "")))
        if not isinstance(asked, ConfirmRequest):
            return asked
        problem = self.front.form_problem(request, form)
        if problem:
            existing = await self.front.subscriber(asked.email)
            return self.page(asked, existing, 400, form_error=problem)
        now = self.front.clock()

        def change(store: StoreBackend) -> tuple[str, Subscriber | None]:
            outcome, existing = confirm_outcome(store, asked)
            if outcome != "ready":
                return outcome, existing
            updated = confirmed(existing, asked.email, asked.rules, now, asked.layout, asked.choices)
            store.save_subscriber(updated)
            return "done", updated

        try:
            outcome, subscriber = await self.front.write(change)
        except CycleLockedError:
            existing = await self.front.subscriber(asked.email)
            return self.front.retry_later(self.page(asked, existing, 503, form_error=BUSY))
        return self.answer(asked, outcome, subscriber)
