"""The web's forms as posted: their fields read once, and why a post is refused before it is read.

Every form carries a signed form token and must not come from another site
(:mod:`digest.web.security`); a refusal keeps what the person typed, so the page shows it again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from starlette.datastructures import FormData, Headers

from digest.errors import SubscriberError
from digest.models import WEEKDAYS
from digest.settings import ScheduleSettings
from digest.state.preferences import Preferences
from digest.state.subscriptions import form_layout
from digest.web.security import CSRF_FIELD, cross_site, form_token_ok

FORM_EXPIRED = "This form had expired. Your entries are kept: please send it again."
FORM_CROSS_SITE = "This form was sent from another site, so nothing was done. If you meant it, press the button here."
BUSY = (
    "The daily digest is being sent right now, so this could not be saved. Nothing was changed: "
    "please try again in a minute with the button below."
)
MANAGE_ACTIONS = ("save", "pause", "resume", "new-feed")  # new-feed: a new feed address (digest.web.feed_addresses)


def form_refusal(headers: Headers, form: FormData, secret: str, public_url: str, now: float) -> str | None:
    """Why a form post is refused (another site sent it, or its form token is not ours or too old)."""
    if cross_site(headers, public_url):
        return FORM_CROSS_SITE
    if not form_token_ok(secret, form.get(CSRF_FIELD), now):
        return FORM_EXPIRED
    return None


CHOICE_LABELS = {
    "frequency": "How often",
    "weekday": "Day of the weekly digest",
    "hour": "Delivery time",
    "timezone": "Time zone",
    "max_papers": "Papers in full per email",
    "delivery": "How you get them",
}
SHOWN_CHARS = 64  # a choice shown again is cut to this: a forged 10 kB field is not echoed whole


@dataclass(frozen=True, slots=True)
class ChoiceFields:
    """The choices of :class:`~digest.state.preferences.Preferences` as a form holds them: text
    (what the page shows, also again after a refusal), ``None`` for a field the form did not have
    (a page made before the choices existed: the subscriber's stay). The layout has its own field."""

    frequency: str | None = None
    weekday: str | None = None
    hour: str | None = None
    timezone: str | None = None
    max_papers: str | None = None
    delivery: str | None = None

    @classmethod
    def read(cls, form: FormData) -> ChoiceFields:
        return cls(*(str(form[name]) if name in form else None for name in CHOICE_LABELS))

    @classmethod
    def of(cls, chosen: Preferences) -> ChoiceFields:
        """What the form shows for these choices (a blank hour or zone: the service's)."""
        return cls(
            chosen.frequency,
            WEEKDAYS[chosen.weekday],
            "" if chosen.hour is None else str(chosen.hour),
            chosen.timezone or "",
            "" if chosen.max_papers is None else str(chosen.max_papers),
            "email" if chosen.by_email else "feed",
        )

    def shown(self) -> ChoiceFields:
        """The fields cut to :data:`SHOWN_CHARS` each, to show again."""
        return ChoiceFields(*(None if value is None else value[:SHOWN_CHARS] for value in self.values()))

    def over(self, current: ChoiceFields) -> ChoiceFields:
        """The fields to show again after a refusal: those posted (cut), ``current``'s for the rest."""
        return ChoiceFields(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(self.shown().values(), current.values(), strict=True)
            )
        )

    def values(self) -> tuple[str | None, ...]:
        return (self.frequency, self.weekday, self.hour, self.timezone, self.max_papers, self.delivery)

    def chosen(self, base: Preferences, service_zone: str) -> tuple[Preferences, tuple[str, ...]]:
        """``base`` with the fields the form had, and every problem (each names its field and value).
        An hour with no zone is in the service's zone."""
        texts = dict(zip(CHOICE_LABELS, self.values(), strict=True))
        errors: list[str] = []
        result = base
        for key, text in texts.items():
            try:
                result = result.with_text(CHOICE_LABELS, **{key: text})
            except SubscriberError as exc:
                errors.append(f"{exc}.")
        if result.hour is not None and result.timezone is None:
            result = replace(result, timezone=service_zone)
        return result, tuple(errors)


def choice_context(schedule: ScheduleSettings, choices: ChoiceFields) -> dict[str, Any]:
    """What ``_delivery_choice.html`` shows: the fields, and the service's zone and usual time
    ("07:00", from ``schedule.cron`` when it names one time of day, else "")."""
    minute, hour, *_ = [*schedule.cron.split(), "", ""]
    usual = f"{int(hour):02d}:{int(minute):02d}" if hour.isdigit() and minute.isdigit() else ""
    return {"choices": choices, "service_zone": schedule.timezone, "usual_time": usual}


@dataclass(frozen=True, slots=True)
class SignupForm:
    """The sign-up form: an address, rules, a layout, the other choices, and which button was pressed."""

    email: str
    rules_text: str
    layout: str
    action: object
    choices: ChoiceFields = ChoiceFields()

    @classmethod
    def read(cls, form: FormData) -> SignupForm:
        return cls(
            str(form.get("email", "")),
            str(form.get("rules", "")),
            form_layout(form.get("layout")),
            form.get("action"),
            ChoiceFields.read(form),
        )

    def kept(self) -> dict[str, Any]:
        """What the page shows again when the post is refused."""
        return {"email": self.email, "rules_text": self.rules_text, "layout": self.layout}


@dataclass(frozen=True, slots=True)
class ManageForm:
    """The manage page's form: its link token, the button pressed, the rules and the layout
    (``None`` when the form had no layout field: the subscriber's stays)."""

    token: str
    action: str
    rules_text: str
    layout: str | None
    choices: ChoiceFields = ChoiceFields()

    @classmethod
    def read(cls, form: FormData) -> ManageForm:
        layout = form_layout(form.get("layout")) if "layout" in form else None
        rules, choices = str(form.get("rules", "")), ChoiceFields.read(form)
        return cls(str(form.get("token", "")), str(form.get("action", "")), rules, layout, choices)

    def kept_rules(self, current: tuple[str, ...]) -> str:
        """The rules to show again: those typed when saving, else the subscriber's own."""
        return self.rules_text if self.action == "save" else "\n".join(current)
