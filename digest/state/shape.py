"""Does a parsed store file have the shape digest writes? Pure: a document in, problems out.

Why: JSON that parses is not yet a store. ``{}``, ``{"_default": {}}`` or ``"subscribers": []``
used to be read as an empty store, and the next write rotated the real one out of ``.bak``; a
subscriber without an address or a ledger whose days are a string ended in a traceback after
the store and its backup had been rewritten. Every document of every known table is checked
for the keys and types the code relies on (and the seen ordinals for consistency), once, when
the file is opened, and by ``digest doctor`` for the store and its backup; checks run column by
column at C speed where they can, so they cost less than parsing the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

Predicate = Callable[[Any], bool]
MAX_PROBLEMS = 5


@dataclass(frozen=True, slots=True)
class Check:
    """A key's value: one of ``types`` (``None`` only where ``optional``), and, if given, ``valid``."""

    types: frozenset[type]
    valid: Predicate | None = None
    optional: bool = False
    # ``valid`` over a whole column at C speed, where there is such a form (tables run to 10⁵ rows).
    valid_column: Callable[[list[Any]], bool] | None = None

    def __call__(self, value: Any) -> bool:
        if value is None:
            return self.optional
        return type(value) in self.types and (self.valid is None or self.valid(value))

    def all(self, values: list[Any]) -> bool:
        """The same for many values, fast: one C-level pass for the types, then ``valid`` per value."""
        kinds = set(map(type, values))
        if self.optional:
            kinds.discard(type(None))
        if not kinds <= self.types:
            return False
        if self.valid_column is not None and not self.optional:
            return self.valid_column(values)
        return self.valid is None or all(self.valid(v) for v in values if v is not None)


def is_iso_date(value: Any) -> bool:
    """A date as digest writes it: ``YYYY-MM-DD`` (``fromisoformat`` alone also takes ``20261206``)."""
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_iso_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _texts(value: list[Any]) -> bool:
    return set(map(type, value)) <= {str}


def _dates(value: list[Any]) -> bool:
    return _texts(value) and all(map(is_iso_date, value))


BASE36_AND_DOTS = b"0123456789abcdefghijklmnopqrstuvwxyz."


def _ledger_days(value: dict[Any, Any]) -> bool:
    """{listed date: encoded ordinals} (see :mod:`digest.state.ledger`): base-36 numbers joined by dots.

    Checked over each subscriber's codes joined, as bytes: ``translate`` deletes every allowed
    byte at C speed, cheaper than a regular expression per subscriber."""
    if not (set(map(type, value)) <= {str} and set(map(type, value.values())) <= {str}):
        return False
    joined = ".".join(value.values())
    if not joined:
        return True
    try:
        stray = joined.encode("ascii").translate(None, BASE36_AND_DOTS)
    except UnicodeEncodeError:
        return False
    return not stray and ".." not in joined and joined[0] != "." and joined[-1] != "."


def optional(check: Check) -> Check:
    return Check(check.types, check.valid, optional=True, valid_column=check.valid_column)


TEXT = Check(frozenset({str}))
NONEMPTY_TEXT = Check(frozenset({str}), bool, valid_column=all)
DATE = Check(frozenset({str}), is_iso_date)
TIME = Check(frozenset({str}), is_iso_time)
WHOLE_NUMBER = Check(frozenset({int}), lambda n: n >= 0, valid_column=lambda ns: min(ns, default=0) >= 0)
LIST_OF_TEXT = Check(frozenset({list}), _texts)
LIST_OF_DATES = Check(frozenset({list}), _dates)
LEDGER_DAYS = Check(frozenset({dict}), _ledger_days)
FLAG = Check(frozenset({bool}))
LIST_OF_OBJECTS = Check(frozenset({list}), lambda v: set(map(type, v)) <= {dict})

# table → {key: check}; an absent key counts as None, which only optional checks allow.
TABLES: dict[str, dict[str, Check]] = {
    "meta": {"schema_version": WHOLE_NUMBER, "prune_horizon": optional(DATE)},
    "seen": {"id": NONEMPTY_TEXT, "listed_on": DATE, "n": WHOLE_NUMBER},
    "items": {
        "id": NONEMPTY_TEXT,
        "source": TEXT,
        "title": TEXT,
        "abstract": TEXT,
        "url": TEXT,
        "listed_on": DATE,
        "published_at": optional(TIME),
        "authors": optional(LIST_OF_TEXT),
        "upvotes": optional(WHOLE_NUMBER),
        "comments": optional(WHOLE_NUMBER),
        "ai_keywords": optional(LIST_OF_TEXT),
        "categories": optional(LIST_OF_TEXT),
        "ai_summary": optional(TEXT),
        "organization": optional(TEXT),
        "thumbnail": optional(TEXT),
        "github_repo": optional(TEXT),
        "withdrawn": optional(FLAG),
    },
    "subscribers": {
        "email": NONEMPTY_TEXT,
        "rules": LIST_OF_TEXT,
        "name": optional(TEXT),
        "active": optional(FLAG),
        "subscribed_at": optional(TIME),
        "last_delivery_at": optional(TIME),
        "caught_up_to": optional(DATE),
        "layout": optional(Check(frozenset({str}), lambda v: v in ("full", "compact"))),
        "frequency": optional(Check(frozenset({str}), lambda v: v in ("daily", "weekly"))),
        "weekday": optional(Check(frozenset({int}), lambda v: 0 <= v <= 6)),
        "timezone": optional(NONEMPTY_TEXT),
        "hour": optional(Check(frozenset({int}), lambda v: 0 <= v <= 23)),
        "max_papers": optional(Check(frozenset({int}), lambda v: v >= 1)),
        "by_email": optional(FLAG),
        "handled_at": optional(TIME),
        "feed_key": optional(NONEMPTY_TEXT),
    },
    "ledger": {"email": NONEMPTY_TEXT, "days": LEDGER_DAYS},
    "cycles": {
        "started_at": TIME,
        "as_of": DATE,
        "sources": LIST_OF_OBJECTS,
        **{count: WHOLE_NUMBER for count in ("fetched", "new", "matched", "sent", "failed")},
    },
    "sources": {
        "name": NONEMPTY_TEXT,
        "failed_days": optional(LIST_OF_DATES),
        "fetched_through": optional(DATE),
        "last_ok_at": optional(TIME),
        "last_attempt_at": optional(TIME),
        "lost": optional(Check(frozenset({list}))),
    },
    "failures": {"email": NONEMPTY_TEXT},
    "departures": {"email": NONEMPTY_TEXT, "at": TIME},
    # A person's "more like this" (+1) or "not for me" (-1) on one paper, the latest press (digest.web.vote).
    "votes": {
        "email": NONEMPTY_TEXT,
        "paper": NONEMPTY_TEXT,
        "vote": Check(frozenset({int}), lambda v: v in (1, -1)),
        "at": TIME,
    },
}


def _table_ok(name: str, documents: list[Any]) -> bool:
    """Every document of a table as it should be, checked key by key over the whole table (fast)."""
    if not set(map(type, documents)) <= {dict}:
        return False
    return all(check.all([d.get(key) for d in documents]) for key, check in TABLES[name].items())


def _seen_consistent(documents: list[dict[str, Any]]) -> list[str]:
    """Ordinals are given in order from 0 (:meth:`Store._ordinal_of`): one per id, each once, none
    past the count. Two ids on one ordinal would make the ledger answer for the wrong paper."""
    ordinals = [d["n"] for d in documents]
    problems = []
    if len(set(ordinals)) != len(ordinals) or (ordinals and max(ordinals) >= len(ordinals)):
        problems.append("table 'seen': its ordinals ('n') are not one each from 0 to its count")
    if len({d["id"] for d in documents}) != len(documents):
        problems.append("table 'seen': an id is listed twice")
    return problems


def _ledger_consistent(documents: list[dict[str, Any]]) -> list[str]:
    days = {day for d in documents for day in d["days"]}
    bad = sorted(day for day in days if not is_iso_date(day))
    return [f"table 'ledger': {bad[0]!r} is not a date"] if bad else []


CONSISTENT: dict[str, Callable[[list[dict[str, Any]]], list[str]]] = {
    "seen": _seen_consistent,
    "ledger": _ledger_consistent,
}


def shape_problems(data: Mapping[str, Any]) -> list[str]:
    """What in ``data`` (a store document at the current schema version) is not as digest writes it.

    Empty means the store can be used. At most :data:`MAX_PROBLEMS` are listed, each naming the
    table, the document and the key. A table that is absent is empty; tables digest does not know
    are left alone.
    """
    problems: list[str] = []
    meta = data.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("1"), dict):
        problems.append("it has no meta table (schema version): it was not written by digest")
    for name in TABLES:
        table = data.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"table {name!r} is a {type(table).__name__}, not an object of documents")
            continue
        if _table_ok(name, list(table.values())):
            if name in CONSISTENT:
                problems.extend(CONSISTENT[name](list(table.values())))
            continue
        for doc_id, document in table.items():  # find and name the documents at fault
            if len(problems) >= MAX_PROBLEMS:
                return problems
            problem = document_problem(name, document)
            if problem:
                problems.append(f"{name} document {doc_id}{problem}")
    return problems[:MAX_PROBLEMS]


def document_problem(table: str, document: Any) -> str | None:
    """What is wrong with one document of ``table`` (a phrase to follow its name), or None."""
    if not isinstance(document, dict):
        return f" is a {type(document).__name__}, not an object"
    for key, check in TABLES[table].items():
        if not check(document.get(key)):
            value = document.get(key, "missing")
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            return f": {key!r} is {shown}"
    return None
