"""The delivery ledger in a compact form: who got which item, by day of listing.

Every item id gets an ordinal (a small integer) when first seen. A subscriber's ledger is
``{listed_on: code}``, where ``code`` is that day's delivered ordinals, sorted, delta-encoded in
base 36 and joined by ``.``: a year with 10,000 subscribers stays tens of megabytes instead of
gigabytes, pruning a day is dropping a key, and a cycle decodes only the days it can deliver.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36_digits(value: int) -> str:
    if value == 0:
        return "0"
    out = []
    while value:
        value, rest = divmod(value, 36)
        out.append(DIGITS[rest])
    return "".join(reversed(out))


# Every value of one or two digits, computed once: nearly all deltas within a day are that small,
# and recording each email encodes a few dozen of them in the send loop.
_SHORT = [_base36_digits(value) for value in range(36 * 36)]


def _base36(value: int) -> str:
    return _SHORT[value] if value < len(_SHORT) else _base36_digits(value)


def encode(ordinals: Iterable[int]) -> str:
    """Sorted, de-duplicated ordinals as base-36 deltas: ``[5, 7, 40]`` → ``"5.2.x"``."""
    previous = 0
    parts = []
    for ordinal in sorted(set(ordinals)):
        parts.append(_base36(ordinal - previous))
        previous = ordinal
    return ".".join(parts)


def decode(code: str) -> list[int]:
    total = 0
    out = []
    for part in code.split(".") if code else ():
        total += int(part, 36)
        out.append(total)
    return out


class Ledger:
    """email → {listed_on (ISO date) → encoded ordinals}."""

    def __init__(self) -> None:
        self.days: dict[str, dict[str, str]] = {}

    def add(self, email: str, by_day: dict[str, list[int]]) -> None:
        mine = self.days.setdefault(email, {})
        for day, ordinals in by_day.items():
            old = mine.get(day)
            mine[day] = encode([*decode(old), *ordinals] if old else ordinals)

    def delivered(self, email: str, since: str = "") -> set[int]:
        """Ordinals delivered to ``email`` among items listed on or after ``since`` (ISO date)."""
        found: set[int] = set()
        for day, code in self.days.get(email, {}).items():
            if day >= since:
                found.update(decode(code))
        return found

    def prune(self, before: str) -> None:
        for email, mine in self.days.items():
            if any(day < before for day in mine):
                self.days[email] = {day: code for day, code in mine.items() if day >= before}

    def records(self) -> Iterable[dict[str, Any]]:
        return ({"email": email, "days": days} for email, days in self.days.items() if days)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> Ledger:
        ledger = cls()
        for record in records:
            ledger.days[record["email"]] = record["days"]  # the caller's parsed record: no copy
        return ledger
