"""Store schema versions and the steps between them, applied in order when an older store is opened.

Each step is a pure function over the raw TinyDB document (``{table: {doc_id: record}}``), so it
can be tested on a literal dict and never half-applies: the result is written by the store's next
atomic flush, and the file as it was is kept beside it (``digest.json.v<N>.bak``). A store written
by a newer digest is refused rather than guessed at.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from digest.errors import StoreError

Raw = dict[str, Any]

SCHEMA_VERSION = 4
RULES_BIND_ONE_WORD = 4  # the first schema whose rules read ``-`` as negating one word
MIGRATIONS: dict[int, Callable[[Raw], None]] = {}


def migration(from_version: int) -> Callable[[Callable[[Raw], None]], Callable[[Raw], None]]:
    """Register the step that upgrades a store from ``from_version`` to the next version."""

    def register(step: Callable[[Raw], None]) -> Callable[[Raw], None]:
        MIGRATIONS[from_version] = step
        return step

    return register


@migration(1)
def sources_table(data: Raw) -> None:
    """v1 kept failed days in ``meta.failed_days`` ({source: [days]}); v2 has a ``sources`` table
    with each source's failed days, last success and last error, for ``digest status``."""
    meta = data["meta"]["1"]
    failed = meta.pop("failed_days", None) or {}
    table = data.setdefault("sources", {})
    for doc_id, (name, days) in enumerate(sorted(failed.items()), start=1):
        table[str(doc_id)] = {"name": name, "failed_days": sorted(days)}
    data.setdefault("failures", {})


def schema_version(data: Raw) -> int:
    table = data.get("meta")
    meta = table.get("1") if isinstance(table, dict) else None
    # type(...) is int: True is an int too, and it is no version.
    if not isinstance(meta, dict) or type(meta.get("schema_version")) is not int:
        raise StoreError("the store has no schema version in its meta table")
    version: int = meta["schema_version"]
    return version


def migrate(data: Raw, where: str) -> tuple[Raw, int]:
    """The document upgraded to :data:`SCHEMA_VERSION` (a copy) and the version it had."""
    try:
        found = schema_version(data)
    except StoreError as exc:
        raise StoreError(f"store {where}: {exc}; run `digest doctor`") from None
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"store {where} has schema version {found}, written by a newer digest; this one reads up to "
            f"version {SCHEMA_VERSION}. Upgrade digest (the file was left untouched)."
        )
    if found == SCHEMA_VERSION:
        return data, found
    upgraded = copy.deepcopy(data)
    for version in range(found, SCHEMA_VERSION):
        step = MIGRATIONS.get(version)
        if step is None:
            raise StoreError(f"store {where} has schema version {found}, which this digest cannot upgrade")
        try:
            step(upgraded)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a table of the wrong shape
            raise StoreError(
                f"store {where} (schema version {found}) cannot be upgraded: its data is not as digest wrote it "
                f"({type(exc).__name__}: {exc}); it was left untouched; run `digest doctor`"
            ) from None
        upgraded["meta"]["1"]["schema_version"] = version + 1
    return upgraded, found


@migration(2)
def compact_ledger(data: Raw) -> None:
    """v2 kept each subscriber's ledger as ``{item id: listed date}``; v3 gives every seen item an
    ordinal (``seen[].n``) and keeps the ledger as ``{listed date: encoded ordinals}``
    (:mod:`digest.state.ledger`), about ten times smaller, and cheap to prune and to read by day."""
    from digest.state.ledger import encode

    seen = data.setdefault("seen", {})
    ordinal: dict[str, int] = {}
    for n, key in enumerate(sorted(seen, key=int)):
        seen[key]["n"] = n
        ordinal[seen[key]["id"]] = n
    next_key = max((int(k) for k in seen), default=0) + 1
    ledger = data.get("ledger", {})
    for doc in ledger.values():
        by_day: dict[str, list[int]] = {}
        for item_id, day in doc.pop("items", {}).items():
            if item_id not in ordinal:  # delivered but never recorded as seen: remember it now
                ordinal[item_id] = len(ordinal)
                seen[str(next_key)] = {"id": item_id, "listed_on": day, "n": ordinal[item_id]}
                next_key += 1
            by_day.setdefault(day, []).append(ordinal[item_id])
        doc["days"] = {day: encode(ordinals) for day, ordinals in by_day.items()}


@migration(3)
def minus_negates_one_word(data: Raw) -> None:
    """v3 read ``-a b`` as NOT "a b" (``-`` took the whole phrase after it); v4 reads ``-`` as search
    boxes do, on the one word after it. Each stored rule whose meaning that changes is rewritten to
    its canonical form under the old reading (``-survey 4090`` → ``NOT "survey 4090"``), which
    means the same under the new one."""
    from digest.matching.syntax import upgraded_rules

    for record in data.get("subscribers", {}).values():
        rules = record.get("rules")
        if isinstance(rules, list) and all(isinstance(rule, str) for rule in rules):  # else: the shape check says so
            record["rules"] = upgraded_rules(rules, 1)
