"""Does a parsed store file have the shape digest writes? Pure: a document in, problems out.

Why: JSON that parses is not yet a store. ``{}``, ``{"_default": {}}`` or ``"subscribers": []``
used to be read as an empty store, and the next write rotated the real one out of ``.bak``; a
subscriber without an address or a ledger whose days are a string ended in a traceback after
the store and its backup had been rewritten. Every document of every known table is checked
for the keys and types the code relies on, once, when the file is opened (cheap next to parsing
it), and by ``digest doctor`` for the store and its backup.
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


def _date_ok(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _time_ok(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _texts(value: list[Any]) -> bool:
    return set(map(type, value)) <= {str}


def _dates(value: list[Any]) -> bool:
    return _texts(value) and all(map(_date_ok, value))


def _ledger_days(value: dict[Any, Any]) -> bool:
    """{listed date: encoded ordinals} (see :mod:`digest.ledger`)."""
    return set(map(type, value)) <= {str} and set(map(type, value.values())) <= {str}


def optional(check: Check) -> Check:
    return Check(check.types, check.valid, optional=True, valid_column=check.valid_column)


TEXT = Check(frozenset({str}))
NONEMPTY_TEXT = Check(frozenset({str}), bool, valid_column=all)
DATE = Check(frozenset({str}), _date_ok)
TIME = Check(frozenset({str}), _time_ok)
WHOLE_NUMBER = Check(frozenset({int}), lambda n: n >= 0, valid_column=lambda ns: min(ns, default=0) >= 0)
LIST_OF_TEXT = Check(frozenset({list}), _texts)
LIST_OF_DATES = Check(frozenset({list}), _dates)
LEDGER_DAYS = Check(frozenset({dict}), _ledger_days)

# table → {key: check}; an absent key counts as None, which only optional checks allow.
TABLES: dict[str, dict[str, Check]] = {
    "meta": {"schema_version": WHOLE_NUMBER, "prune_horizon": optional(DATE)},
    "seen": {"id": NONEMPTY_TEXT, "listed_on": TEXT, "n": WHOLE_NUMBER},
    "items": {
        "id": NONEMPTY_TEXT,
        "source": TEXT,
        "title": TEXT,
        "abstract": TEXT,
        "url": TEXT,
        "listed_on": DATE,
        "published_at": optional(TIME),
    },
    "subscribers": {
        "email": NONEMPTY_TEXT,
        "rules": LIST_OF_TEXT,
        "subscribed_at": optional(TIME),
        "last_delivery_at": optional(TIME),
        "caught_up_to": optional(DATE),
    },
    "ledger": {"email": NONEMPTY_TEXT, "days": LEDGER_DAYS},
    "cycles": {"started_at": TIME, "as_of": DATE},
    "sources": {"name": NONEMPTY_TEXT, "failed_days": optional(LIST_OF_DATES), "fetched_through": optional(DATE)},
    "failures": {"email": NONEMPTY_TEXT},
}


def _table_ok(name: str, documents: list[Any]) -> bool:
    """Every document of a table as it should be, checked key by key over the whole table (fast)."""
    if not set(map(type, documents)) <= {dict}:
        return False
    return all(check.all([d.get(key) for d in documents]) for key, check in TABLES[name].items())


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
