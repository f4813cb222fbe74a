"""A subscriber's own rhythm, format and size: the choices, checked in one place.

The CLI, the sign-up form, the confirm link, the manage page and an import all take these
choices; each reads them with the functions here, so a value refused in one is refused in all,
with the same one line naming the value. Pure: no I/O beyond zoneinfo looking a zone name up.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import Any

from digest.errors import SubscriberError
from digest.models import FREQUENCIES, LAYOUTS, WEEKDAYS, Subscriber

MAX_PAPERS_LIMIT = 100  # a cap above this is no cap: the size budget cuts a digest long before
MAX_ZONE_CHARS = 64  # the longest IANA name has 32
DELIVERIES = ("email", "feed")  # by_email True / False
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
UNSET = ("", "none", "default")  # what a person types for "the service's own" hour, zone or no cap
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*")


def shown(value: object) -> str:
    """A value as an error message quotes it: short, so a 10 kB field is not echoed whole."""
    text = repr(value)
    return text if len(text) <= 42 else text[:40] + "…"


def refuse(label: str, value: object, what: str) -> SubscriberError:
    return SubscriberError(f"{label} {shown(value)}: {what}")


def parse_weekday(text: str, label: str = "weekday") -> int:
    """``mon``..``sun`` or the full name, any case: 0 (Monday)..6."""
    word = text.strip().lower()
    for number, name in enumerate(DAY_NAMES):
        if word and (word == WEEKDAYS[number] or word == name.lower()):
            return number
    raise refuse(label, text, f"use a day of the week: {', '.join(WEEKDAYS)}")


def parse_rhythm(text: str, label: str = "frequency") -> tuple[str, int | None]:
    """``daily``, ``weekly:fri`` or a day alone (``fri``: weekly on Friday): (frequency, weekday);
    the weekday is None for daily, so a person's day is remembered if they go back to weekly."""
    word = text.strip().lower()
    if word == "daily":
        return "daily", None
    if word.startswith("weekly:"):
        return "weekly", parse_weekday(word.removeprefix("weekly:"), label)
    if word == "weekly":
        raise refuse(label, text, "say which day, e.g. weekly:fri")
    try:
        return "weekly", parse_weekday(word, label)
    except SubscriberError:
        raise refuse(label, text, f"use daily, or weekly:DAY with DAY one of {', '.join(WEEKDAYS)}") from None


def parse_frequency(text: str, label: str = "frequency") -> str:
    word = text.strip().lower()
    if word not in FREQUENCIES:
        raise refuse(label, text, "choose daily or weekly")
    return word


def parse_hour(text: str, label: str = "hour") -> int | None:
    """A whole hour 0-23 (``7``, ``07`` or ``07:00``); ``default`` or blank: the service's time."""
    word = text.strip().lower()
    if word in UNSET:
        return None
    found = re.fullmatch(r"(\d{1,2})(:00)?", word)
    if found is None or int(found.group(1)) > 23:
        raise refuse(label, text, "use a whole hour from 0 to 23, or default for the service's time")
    return int(found.group(1))


# Names zoneinfo loads that are no one's zone: the server's own (``localtime``), a placeholder
# (``Factory``), the POSIX rules template, and the ``posix/`` and ``right/`` copies of every zone
# (``right/`` counts leap seconds: its clocks run 27 s off civil time).
NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
NOT_ZONE_DIRS = ("posix/", "right/")


def known_zone(name: str) -> bool:
    """A canonical IANA zone name (``Europe/Berlin``, ``UTC``, ``Etc/GMT+5``) that zoneinfo loads;
    never a path, the server's own zone, or a ``posix/`` / ``right/`` copy of a zone."""
    return len(name) <= MAX_ZONE_CHARS and name in canonical_zones() and _loads(name)


@lru_cache(maxsize=1)
def canonical_zones() -> frozenset[str]:
    """The zone names a person may choose: tzdata's list less :data:`NOT_ZONES` and the copies.
    Cached: the list is read from the disk (some 600 files)."""
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in NOT_ZONES and not name.startswith(NOT_ZONE_DIRS) and ZONE_NAME.fullmatch(name)
    )


@lru_cache(maxsize=1024)
def _loads(name: str) -> bool:
    """Cached: a form sends a zone with every save, and zoneinfo reads the file for a name it has not kept."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def parse_timezone(text: str, label: str = "timezone") -> str | None:
    """An IANA name such as ``Europe/Berlin``; ``default`` or blank: the service's zone."""
    name = text.strip()
    if name.lower() in UNSET:
        return None
    if not known_zone(name):
        raise refuse(label, text, "not a known time zone; use an IANA name such as Europe/Berlin or America/New_York")
    return name


def parse_max_papers(text: str, label: str = "max papers") -> int | None:
    """At most so many papers in full in the email (1..100); ``none`` or blank: no cap."""
    word = text.strip().lower()
    if word in (*UNSET, "all"):
        return None
    if not re.fullmatch(r"\d{1,3}", word) or not 1 <= int(word) <= MAX_PAPERS_LIMIT:
        raise refuse(label, text, f"use a number from 1 to {MAX_PAPERS_LIMIT}, or none for no cap")
    return int(word)


def parse_layout(text: str, label: str = "layout") -> str:
    word = text.strip().lower()
    if word not in LAYOUTS:
        raise refuse(label, text, f"use one of {', '.join(LAYOUTS)}")
    return word


def parse_delivery(text: str, label: str = "delivery") -> bool:
    """``email`` (True) or ``feed`` (False: feed only, no digest email)."""
    word = text.strip().lower()
    if word not in DELIVERIES:
        raise refuse(label, text, "use email, or feed for the personal feed only")
    return word == "email"


HINTS = {
    "frequency": f"use one of {', '.join(FREQUENCIES)}",
    "weekday": "use 0 (Monday) to 6 (Sunday)",
    "timezone": "use an IANA time zone name such as Europe/Berlin, or null",
    "hour": "use a whole hour from 0 to 23, or null",
    "layout": f"use one of {', '.join(LAYOUTS)}",
    "max_papers": f"use a number from 1 to {MAX_PAPERS_LIMIT}, or null",
    "by_email": "use true or false",
}


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True, slots=True)
class Preferences:
    """The Subscriber fields a person chooses, as one value that is always valid (checked when made)."""

    frequency: str = "daily"
    weekday: int = 0
    timezone: str | None = None
    hour: int | None = None
    layout: str = "full"
    max_papers: int | None = None
    by_email: bool = True

    def __post_init__(self) -> None:
        problems = {
            "frequency": self.frequency in FREQUENCIES,
            "weekday": _whole(self.weekday, 0, 6),
            "timezone": self.timezone is None or (isinstance(self.timezone, str) and known_zone(self.timezone)),
            "hour": self.hour is None or _whole(self.hour, 0, 23),
            "layout": self.layout in LAYOUTS,
            "max_papers": self.max_papers is None or _whole(self.max_papers, 1, MAX_PAPERS_LIMIT),
            "by_email": isinstance(self.by_email, bool),
        }
        for name, ok in problems.items():
            if not ok:
                raise refuse(name, getattr(self, name), HINTS[name])

    @classmethod
    def of(cls, subscriber: Subscriber) -> Preferences:
        """A subscriber's choices. A stored value past today's limits (a cap of 500 written by
        hand, a zone gone from tzdata) is not refused here, so the person's page still opens: it is
        clamped to the nearest valid choice."""
        values = {f.name: getattr(subscriber, f.name) for f in fields(cls)}
        if isinstance(values["max_papers"], int) and values["max_papers"] > MAX_PAPERS_LIMIT:
            values["max_papers"] = MAX_PAPERS_LIMIT
        if values["timezone"] is not None and not known_zone(values["timezone"]):
            values["timezone"] = None  # a zone this system's tzdata no longer knows: the service's
        return cls(**values)

    def applied(self, subscriber: Subscriber) -> Subscriber:
        return replace(subscriber, **asdict(self))

    def differences(self) -> dict[str, Any]:
        """The choices that differ from the defaults, by field name: what an export line, a confirm
        link and a state fingerprint carry (so those made before the choices existed stay the same)."""
        default = Preferences()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }

    @classmethod
    def read(cls, record: Mapping[str, Any], base: Preferences | None = None) -> Preferences:
        """Choices from JSON (an export line, a confirm link): the keys present over ``base``
        (default: the defaults); a wrong type or value raises :class:`SubscriberError` naming it."""
        values = asdict(base or cls())
        for name in values:
            if name in record:
                values[name] = record[name]
        if values["layout"] is None:  # older export lines may write null for "full"
            values["layout"] = "full"
        return cls(**values)

    def with_text(self, labels: Mapping[str, str] | None = None, **text: str | None) -> Preferences:
        """These choices with some given as a person typed them: ``rhythm="weekly:fri"`` (or
        ``frequency="weekly"`` and ``weekday="fri"``), ``hour="7"``, ``timezone``, ``max_papers``,
        ``layout``, ``delivery="feed"``; ``None`` keeps one. Raises :class:`SubscriberError` for a
        bad one, named by its label in ``labels`` (``--hour`` on the command line), else its key."""
        values = asdict(self)
        labels = {key: (labels or {}).get(key, key.replace("_", " ")) for key in text}
        if text.get("rhythm") is not None:
            frequency, weekday = parse_rhythm(text["rhythm"] or "", labels["rhythm"])
            values["frequency"] = frequency
            values["weekday"] = self.weekday if weekday is None else weekday
        parsers = {
            "frequency": parse_frequency,
            "weekday": parse_weekday,
            "hour": parse_hour,
            "timezone": parse_timezone,
            "max_papers": parse_max_papers,
            "layout": parse_layout,
        }
        for name, parse in parsers.items():
            if text.get(name) is not None:
                values[name] = parse(text[name] or "", labels[name])
        if text.get("delivery") is not None:
            values["by_email"] = parse_delivery(text["delivery"] or "", labels["delivery"])
        return Preferences(**values)

    def describe(self) -> str:
        """One line a person reads: "weekly on Friday at 07:00 (Europe/Berlin) · compact · at most
        20 papers in full · by email"."""
        when = "daily" if self.frequency == "daily" else f"weekly on {DAY_NAMES[self.weekday]}"
        if self.hour is None or self.timezone is None:
            when += " at the usual time"
        else:
            when += f" at {self.hour:02d}:00 ({self.timezone})"
        cap = "every paper in full" if self.max_papers is None else f"at most {self.max_papers} papers in full"
        return " · ".join((when, self.layout, cap, "by email" if self.by_email else "feed only, no email"))

    def short(self) -> str:
        """A table cell: "daily" for the defaults, else "weekly fri · 07h Europe/Berlin · compact ·
        max 20 · feed only" with only what differs (``digest subscribers``)."""
        parts = ["daily" if self.frequency == "daily" else f"weekly {WEEKDAYS[self.weekday]}"]
        if self.hour is not None and self.timezone is not None:
            parts.append(f"{self.hour:02d}h {self.timezone}")
        if self.layout != "full":
            parts.append(self.layout)
        if self.max_papers is not None:
            parts.append(f"max {self.max_papers}")
        if not self.by_email:
            parts.append("feed only")
        return " · ".join(parts)
