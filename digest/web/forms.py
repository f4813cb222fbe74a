"""The web's forms as posted: their fields read once, and why a post is refused before it is read.

Every form carries a signed form token and must not come from another site
(:mod:`digest.web.security`); a refusal keeps what the person typed, so the page shows it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, Headers

from digest.state.subscriptions import form_layout
from digest.web.security import CSRF_FIELD, cross_site, form_token_ok

FORM_EXPIRED = "This form had expired. Your entries are kept: please send it again."
FORM_CROSS_SITE = "This form was sent from another site, so nothing was done. If you meant it, press the button here."
BUSY = (
    "The daily digest is being sent right now, so this could not be saved. Nothing was changed: "
    "please try again in a minute with the button below."
)
MANAGE_ACTIONS = ("save", "pause", "resume")


def form_refusal(headers: Headers, form: FormData, secret: str, public_url: str, now: float) -> str | None:
    """Why a form post is refused (another site sent it, or its form token is not ours or too old)."""
    if cross_site(headers, public_url):
        return FORM_CROSS_SITE
    if not form_token_ok(secret, form.get(CSRF_FIELD), now):
        return FORM_EXPIRED
    return None


@dataclass(frozen=True, slots=True)
class SignupForm:
    """The sign-up form: an address, rules, a layout, and which button was pressed."""

    email: str
    rules_text: str
    layout: str
    action: object

    @classmethod
    def read(cls, form: FormData) -> SignupForm:
        return cls(
            str(form.get("email", "")), str(form.get("rules", "")), form_layout(form.get("layout")), form.get("action")
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

    @classmethod
    def read(cls, form: FormData) -> ManageForm:
        layout = form_layout(form.get("layout")) if "layout" in form else None
        return cls(str(form.get("token", "")), str(form.get("action", "")), str(form.get("rules", "")), layout)

    def kept_rules(self, current: tuple[str, ...]) -> str:
        """The rules to show again: those typed when saving, else the subscriber's own."""
        return self.rules_text if self.action == "save" else "\n".join(current)
