"""Subscribers in and out by the operator: ``digest subscribe``, ``export`` and ``import``.

A subscriber's choices (rhythm, hour, layout, cap, delivery: :mod:`digest.state.preferences`)
go with them both ways; an export line names only those that differ from the defaults, so files
written before the choices existed import as they did.

Both ways in end in :func:`merged`, so a person added again (by hand or from a file) keeps their
place: when they subscribed, their last delivery, how far they are caught up and when a cycle last
handled them, and their feed's address. Losing that would send them the whole look-back window
again, or (``handled_at``) a second digest on a day that already had one. An import is checked whole before anything is
written: every bad line is named, and one bad line refuses the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from digest.errors import DigestError, ImportRefused, LineProblem, SubscriberError
from digest.matching.rules import parse_rules
from digest.models import LAYOUTS, Subscriber
from digest.state.backend import StoreBackend
from digest.state.preferences import Preferences


def normalize_email(value: str) -> str:
    """The address as the store keys it (normalized, lower case); a bad one names itself."""
    try:
        return str(validate_email(value, check_deliverability=False).normalized).lower()
    except EmailNotValidError as exc:
        raise SubscriberError(f"{value!r} is not a valid email address: {exc}") from exc


def merged(existing: Subscriber | None, incoming: Subscriber) -> Subscriber:
    """``incoming`` as the store keeps it: someone already there keeps their place in the cycle
    (without ``handled_at`` their rhythm would fall back to the last delivery time) and their feed
    address (``subscribed_at`` and ``feed_key``: :meth:`digest.signing.Signer.feed_token`)."""
    if existing is None:
        return incoming
    return replace(
        incoming,
        subscribed_at=existing.subscribed_at,
        last_delivery_at=existing.last_delivery_at,
        caught_up_to=existing.caught_up_to,
        handled_at=existing.handled_at,
        feed_key=existing.feed_key,
    )


# -- subscribe ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A checked ``digest subscribe``: the address as stored, the rules as written (stripped), and
    the rules' warnings (misreadings to point out, not refusals)."""

    email: str
    rules: tuple[str, ...]
    warnings: tuple[str, ...]


def check_request(email: str, rules: Sequence[str]) -> Request:
    """Raises :class:`SubscriberError` for a bad address, :class:`RuleError` for a bad rule. No
    rules at all is a request to change only the choices of someone subscribed (:func:`subscribe`)."""
    address = normalize_email(email)
    if not rules:
        return Request(address, (), ())
    parsed = parse_rules(rules)
    warnings = tuple(warning for rule in parsed for warning in rule.warnings)
    return Request(address, tuple(rule.strip() for rule in rules), warnings)


@dataclass(frozen=True, slots=True)
class Choices:
    """A ``digest subscribe``'s choices as typed (keys of :meth:`Preferences.with_text`; a missing
    one is kept), what to call each in an error, and the zone an hour given alone is read in."""

    text: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    zone: str | None = None


def subscribe(
    store: StoreBackend,
    request: Request,
    name: str | None,
    layout: str | None,
    now: datetime,
    choices: Choices | None = None,
) -> tuple[Subscriber, bool]:
    """Add or replace an active subscriber; a name, layout or choice not given is kept. Without
    rules, only the choices of someone already there change: their rules stay, and so does a pause
    or a suspension (``digest resume`` ends those). Returns the subscriber as saved, and whether
    they were there already."""
    choices = choices or Choices()
    existing = store.subscriber(request.email)
    if existing is None and not request.rules:
        raise SubscriberError(f"{request.email} is not subscribed yet: give their rules with -k RULE")
    chosen = (Preferences.of(existing) if existing else Preferences()).with_text(
        choices.labels, layout=layout, **choices.text
    )
    if chosen.hour is not None and chosen.timezone is None:  # an hour alone: in the service's zone
        chosen = replace(chosen, timezone=choices.zone)
    if existing is not None and not request.rules:
        kept = replace(existing, name=name if name is not None else existing.name)
        subscriber = chosen.applied(kept)
    else:
        fresh = Subscriber(
            email=request.email,
            rules=request.rules,
            name=name if name is not None else (existing.name if existing else None),
            active=True,
            subscribed_at=now,
        )
        subscriber = merged(existing, chosen.applied(fresh))
    store.save_subscriber(subscriber)
    return subscriber, existing is not None


# -- export and import ----------------------------------------------------------------------------


def export_record(subscriber: Subscriber) -> dict[str, Any]:
    """What an export keeps of a subscriber: who they are and what they asked for, not the
    cycle's bookkeeping (a store elsewhere starts its own)."""
    chosen = Preferences.of(subscriber).differences()  # only what differs: older digests read the line too
    chosen.pop("layout", None)
    return {
        "email": subscriber.email,
        "rules": list(subscriber.rules),
        "name": subscriber.name,
        "layout": subscriber.layout,
        **chosen,
    }


def export_lines(subscribers: Iterable[Subscriber]) -> str:
    """JSON lines, one subscriber each, by address: the same store exports the same text."""
    people = sorted(subscribers, key=lambda s: s.email)
    return "".join(json.dumps(export_record(s), ensure_ascii=False) + "\n" for s in people)


def read_record(line: str, now: datetime) -> tuple[Subscriber, list[str]]:
    """One line of an export as a new subscriber, and its rules as written (for errors that quote
    them); raises ValueError or :class:`SubscriberError` saying why. The rules are not parsed yet."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    rules = record.get("rules")
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise ValueError('"rules" must be a list of strings')
    name = record.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError('"name" must be a string or null')
    layout = record.get("layout") or "full"  # absent in files exported before layouts
    if layout not in LAYOUTS:
        raise ValueError(f'"layout" must be one of {", ".join(LAYOUTS)}')
    chosen = Preferences.read({**record, "layout": layout})  # files exported before the choices hold none
    address = normalize_email(str(record.get("email", "")))
    return chosen.applied(Subscriber(address, tuple(r.strip() for r in rules), name, subscribed_at=now)), rules


def parse_export(text: str, source: str, now: datetime) -> list[Subscriber]:
    """Every subscriber of an export (``source`` names it in problems), or :class:`ImportRefused`
    naming every bad line: a repeated address, a bad address, a rule that does not parse."""
    people: list[Subscriber] = []
    first_line: dict[str, int] = {}
    problems: list[LineProblem] = []
    # Lines end at "\n" only: str.splitlines would also cut at U+2028 or U+0085, which an export
    # (ensure_ascii=False) writes as they are inside a name.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            person, rules = read_record(line, now)
            if person.email in first_line:
                raise ValueError(f"{person.email} is already on line {first_line[person.email]}")
            first_line[person.email] = number
            parse_rules(rules)
            people.append(person)
        except (ValueError, DigestError) as exc:
            problems.append(LineProblem(source, number, str(exc)))
    if problems:
        raise ImportRefused(problems)
    return people


def import_subscribers(store: StoreBackend, people: Iterable[Subscriber]) -> int:
    """Add or replace ``people`` in one journal line (all or nothing); returns how many."""
    changed = [merged(store.subscriber(person.email), person) for person in people]
    store.save_subscribers(changed)
    return len(changed)
