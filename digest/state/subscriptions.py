"""The pure logic of the web sign-up: read the form, and the state changes of confirm and manage.

No I/O here: the web layer reads and writes the store and sends mail around these functions.

Double opt-in without storing strangers: a sign-up stores nothing. The rules travel inside the
signed confirm token, together with a fingerprint of the subscriber's state when the mail was sent
(:func:`state_key`). Confirming changes that state, so the same link cannot be replayed later to
undo a pause or an edit, and a stranger submitting someone's address can never change their
subscription: only the mailbox owner can click the link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from digest.errors import RuleError
from digest.matching.rules import parse_rule, parse_rules
from digest.matching.syntax import Regex, leaves
from digest.models import LAYOUTS, Subscriber
from digest.state.preferences import Preferences

MAX_EMAIL_CHARS = 254
MAX_RULES = 30
MAX_RULES_CHARS = 5000
MAX_FORM_REGEXES = 10  # over all the rules of a web form (a rule holds 3 at most)


@dataclass(frozen=True, slots=True)
class RuleLine:
    """A non-blank line of the rules field and its 1-based line number in the field."""

    line: int
    text: str


@dataclass(frozen=True, slots=True)
class RulesCheck:
    rules: tuple[str, ...]
    errors: tuple[str, ...]


def rule_lines(text: str) -> list[RuleLine]:
    """One rule per line; blank lines are skipped, surrounding spaces dropped, repeats kept once."""
    seen: set[str] = set()
    lines: list[RuleLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped and stripped not in seen:
            seen.add(stripped)
            lines.append(RuleLine(number, stripped))
    return lines


def describe_rule_error(line: int, exc: RuleError) -> str:
    return f"Line {line}, column {exc.column}: {exc.reason} (in “{exc.rule}”)"


def check_rules(text: str) -> RulesCheck:
    """Every rule parsed on its own, so the person sees every problem at once, each with its position."""
    if len(text) > MAX_RULES_CHARS:
        return RulesCheck((), (f"The rules are {len(text)} characters long; the limit is {MAX_RULES_CHARS}.",))
    lines = rule_lines(text)
    if not lines:
        return RulesCheck((), ("Enter at least one rule, one per line.",))
    if len(lines) > MAX_RULES:
        return RulesCheck((), (f"{len(lines)} rules is too many; the limit is {MAX_RULES}.",))
    errors: list[str] = []
    regexes = 0
    for entry in lines:
        try:
            regexes += sum(isinstance(leaf, Regex) for leaf in leaves(parse_rule(entry.text).node))
        except RuleError as exc:
            errors.append(describe_rule_error(entry.line, exc))
        if regexes > MAX_FORM_REGEXES:  # each costs a compile: a form stops before it costs many
            errors.append(
                f"Line {entry.line}: more than {MAX_FORM_REGEXES} regular expressions in all; keep the ones you need."
            )
            break
    if not errors:
        try:  # the list as a whole, for any check that looks at more than one rule
            parse_rules([entry.text for entry in lines])
        except RuleError as exc:
            number = exc.rule_number or 1
            errors.append(describe_rule_error(lines[min(number, len(lines)) - 1].line, exc))
    return RulesCheck(tuple(entry.text for entry in lines), tuple(errors))


def check_email(text: str) -> tuple[str | None, str | None]:
    """(normalized lower-case address, None) or (None, a message for the person)."""
    value = text.strip()
    if not value:
        return None, "Enter your email address."
    if len(value) > MAX_EMAIL_CHARS:
        return None, f"An email address has at most {MAX_EMAIL_CHARS} characters."
    try:
        normalized = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return None, f"This is not a valid email address: {exc}"
    return normalized.lower(), None


@dataclass(frozen=True, slots=True)
class SignupCheck:
    email: str | None
    rules: tuple[str, ...]
    email_error: str | None
    rule_errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.email is not None and not self.email_error and not self.rule_errors


def check_signup(email_text: str, rules_text: str) -> SignupCheck:
    email, email_error = check_email(email_text)
    rules = check_rules(rules_text)
    return SignupCheck(email, rules.rules, email_error, rules.errors)


def state_key(subscriber: Subscriber | None, departed_at: datetime | None = None) -> str:
    """A short fingerprint of what a confirm link may change: presence, active flag, rules, and the
    choices of :class:`~digest.state.preferences.Preferences` (layout, rhythm, hour, cap, delivery).

    ``departed_at`` is when the address last unsubscribed (:meth:`digest.state.store.Store.departed_at`).
    Without it, "not subscribed" before a sign-up and after an unsubscribe would look the same, and
    an old confirm link would subscribe the person again. ``None`` keeps the fingerprint of links
    sent before departures were recorded.
    """
    state: object = None if subscriber is None else [subscriber.active, list(subscriber.rules)]
    if subscriber is not None and subscriber.layout != "full":  # "full" alone keeps older links' keys
        state = [*state, subscriber.layout]  # type: ignore[misc]
    chosen = {} if subscriber is None else Preferences.of(subscriber).differences()
    chosen.pop("layout", None)
    if chosen:  # the other choices too, once any differs from the defaults (older keys stay as they were)
        state = [*state, chosen]  # type: ignore[misc]
    if departed_at is not None:
        state = [state, departed_at.isoformat()]
    return hashlib.sha256(json.dumps(state).encode("utf-8")).hexdigest()[:16]


GMAIL_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_key(email: str) -> str:
    """The inbox an address reaches, for per-address limits: lower case, ``+tag`` dropped, and for
    Gmail dots dropped too (``J.Doe+x@googlemail.com`` and ``jdoe@gmail.com`` are one inbox).

    Only for counting: the address is still mailed and stored as typed.
    """
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    domain = GMAIL_DOMAINS.get(domain, domain)
    if domain == "gmail.com":
        local = local.replace(".", "")
    return f"{local}@{domain}"


def form_layout(value: object) -> str:
    """The layout a form asked for; anything but a known one (a forged or old form) is "full"."""
    return value if isinstance(value, str) and value in LAYOUTS else "full"


def confirmed(
    existing: Subscriber | None,
    email: str,
    rules: Sequence[str],
    now: datetime,
    layout: str = "full",
    chosen: Preferences | None = None,
) -> Subscriber:
    """The subscriber after their confirm link: active with the rules and choices they asked for
    (``chosen``, else the defaults with ``layout``: links sent before the other choices existed).

    A new or paused subscriber starts with ``caught_up_to=None``, so their first digest covers the
    look-back window (and a paused person does not get the backlog of their pause). An active one
    only changes rules and choices and keeps their place.
    """
    chosen = chosen or Preferences(layout=layout)
    if existing is None:
        fresh = Subscriber(email=email, rules=tuple(rules), active=True, subscribed_at=now, caught_up_to=None)
        return chosen.applied(fresh)
    caught_up_to = existing.caught_up_to if existing.active else None
    updated = replace(
        existing,
        rules=tuple(rules),
        active=True,
        subscribed_at=existing.subscribed_at or now,
        caught_up_to=caught_up_to,
    )
    return chosen.applied(updated)


def with_rules(
    subscriber: Subscriber, rules: Sequence[str], layout: str | None = None, chosen: Preferences | None = None
) -> Subscriber:
    """The manage page's Save: the rules, and the choices when the form had them (an old tab has not)."""
    if chosen is not None:
        subscriber = chosen.applied(subscriber)
    return replace(subscriber, rules=tuple(rules), layout=layout or subscriber.layout)


def paused(subscriber: Subscriber) -> Subscriber:
    return replace(subscriber, active=False)


def resumed(subscriber: Subscriber) -> Subscriber:
    """Active again from now on: the next digest covers the look-back window, not the whole pause."""
    if subscriber.active:
        return subscriber
    return replace(subscriber, active=True, caught_up_to=None)
