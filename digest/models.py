"""The nouns of the pipeline, as plain immutable values with no I/O.

Items and subscribers cross the store boundary as dicts (``to_record``/``from_record``), so the
store format is written down in one place and the rest of the code works with typed objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

LAYOUTS = ("full", "compact")  # Subscriber.layout: how the email shows each paper
FREQUENCIES = ("daily", "weekly")  # Subscriber.frequency
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # Subscriber.weekday indexes this (0 = Monday)


@dataclass(frozen=True, slots=True)
class Item:
    """One listing (a paper) as digest keeps it. ``id`` is stable across days and sources."""

    id: str
    source: str
    title: str
    abstract: str
    url: str
    listed_on: date
    authors: tuple[str, ...] = ()
    published_at: datetime | None = None
    upvotes: int = 0
    comments: int = 0
    thumbnail: str | None = None
    github_repo: str | None = None
    ai_keywords: tuple[str, ...] = ()
    organization: str | None = None
    withdrawn: bool = False
    categories: tuple[str, ...] = ()  # arXiv categories (cs.CV, …) where the source knows them
    ai_summary: str = ""  # the feed's one-line summary (Hugging Face's ``ai_summary``), if any

    def __hash__(self) -> int:
        """By id alone (equality still compares every field): the generated hash would hash all
        seventeen fields, in Python, every time a render cache looks a paper up."""
        return hash(self.id)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "title": self.title,
            "abstract": self.abstract,
            "url": self.url,
            "listed_on": self.listed_on.isoformat(),
            "authors": list(self.authors),
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "upvotes": self.upvotes,
            "comments": self.comments,
            "thumbnail": self.thumbnail,
            "github_repo": self.github_repo,
            "ai_keywords": list(self.ai_keywords),
            "organization": self.organization,
            "withdrawn": self.withdrawn,
            "categories": list(self.categories),
            **({"ai_summary": self.ai_summary} if self.ai_summary else {}),  # most feeds have none
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Item:
        published = record.get("published_at")
        return cls(
            id=record["id"],
            source=record["source"],
            title=record["title"],
            abstract=record["abstract"],
            url=record["url"],
            listed_on=date.fromisoformat(record["listed_on"]),
            authors=tuple(record.get("authors", ())),
            published_at=datetime.fromisoformat(published) if published else None,
            upvotes=int(record.get("upvotes", 0)),
            comments=int(record.get("comments", 0)),
            thumbnail=record.get("thumbnail"),
            github_repo=record.get("github_repo"),
            ai_keywords=tuple(record.get("ai_keywords", ())),
            organization=record.get("organization"),
            withdrawn=bool(record.get("withdrawn", False)),
            categories=tuple(record.get("categories", ())),
            ai_summary=record.get("ai_summary") or "",
        )


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A person and their rules. ``active`` is False until a web sign-up is confirmed or while paused."""

    email: str
    rules: tuple[str, ...]
    name: str | None = None
    active: bool = True
    subscribed_at: datetime | None = None
    last_delivery_at: datetime | None = None
    # Start of the window of the last cycle whose digest for this person was handed over (or had
    # nothing to send). Items listed since then that matched but were not delivered stay candidates.
    caught_up_to: date | None = None
    # How the email shows each paper: "full" (abstract excerpt) or "compact" (title, why it
    # matched, one line): a long digest in full is a wall of abstracts (see render).
    layout: str = "full"
    # When the digest goes out: "daily", or "weekly" on ``weekday`` (0 = Monday, as date.weekday()).
    frequency: str = "daily"
    weekday: int = 0
    # The local hour (0–23) in ``timezone`` (an IANA name) at which it goes out; None for either
    # means the service's own schedule (``schedule.cron``).
    timezone: str | None = None
    hour: int | None = None
    # At most this many papers shown in the email; the rest are listed by title with their online
    # link, as on a big day. None: the size budget alone decides.
    max_papers: int | None = None
    # False: feed only — the matches go to the person's Atom feed and no digest email is sent.
    by_email: bool = True
    # When a cycle last handled this person's digest (sent it, or found nothing to send): what
    # their rhythm compares with the latest due time (digest.cycle.rhythm). None: not since upgrading.
    handled_at: datetime | None = None
    # Chosen at random when the person asks for a new feed address (the manage page): their feed's
    # address is a keyed hash of the address and this (digest.signing.Signer.feed_token), so a new
    # key retires the old address. None: the address given since they subscribed.
    feed_key: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "rules": list(self.rules),
            "name": self.name,
            "active": self.active,
            "subscribed_at": self.subscribed_at.isoformat() if self.subscribed_at else None,
            "last_delivery_at": self.last_delivery_at.isoformat() if self.last_delivery_at else None,
            "caught_up_to": self.caught_up_to.isoformat() if self.caught_up_to else None,
            "layout": self.layout,
            "frequency": self.frequency,
            "weekday": self.weekday,
            "timezone": self.timezone,
            "hour": self.hour,
            "max_papers": self.max_papers,
            "by_email": self.by_email,
            "handled_at": self.handled_at.isoformat() if self.handled_at else None,
            **({"feed_key": self.feed_key} if self.feed_key else {}),  # most never ask for a new address
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Subscriber:
        def when(key: str) -> datetime | None:
            value = record.get(key)
            return datetime.fromisoformat(value) if value else None

        return cls(
            email=record["email"],
            rules=tuple(record.get("rules", ())),
            name=record.get("name"),
            active=bool(record.get("active", True)),
            subscribed_at=when("subscribed_at"),
            last_delivery_at=when("last_delivery_at"),
            caught_up_to=date.fromisoformat(record["caught_up_to"]) if record.get("caught_up_to") else None,
            layout=record.get("layout") or "full",  # records written before layouts existed
            # Records written before per-subscriber rhythm hold none of these: the old behaviour.
            frequency=record.get("frequency") or "daily",
            weekday=int(record.get("weekday") or 0),
            timezone=record.get("timezone"),
            hour=record.get("hour"),
            max_papers=record.get("max_papers"),
            by_email=bool(record.get("by_email", True)),
            handled_at=when("handled_at"),
            feed_key=record.get("feed_key") or None,
        )


@dataclass(frozen=True, slots=True)
class Highlight:
    """A matched span: ``field`` is ``title`` or ``abstract``; offsets index the item's text."""

    field: str
    start: int
    end: int


class HighlightSource(Protocol):
    """Finds the highlights of one rule in one paper when they are first read (:class:`RuleMatch`)."""

    def highlights(self, doc: int) -> tuple[Highlight, ...]: ...


class RuleMatch:
    """Why an item is in a digest: which rule, and which words it matched where.

    A cycle decides thousands of matches and its digests show a few dozen papers each, so the
    matcher's matches find their highlights only when first read (:meth:`lazy`), then keep them;
    ``in_title`` (what ranking needs) is known without them. Equal, hashed and pickled by rule and
    highlights, as an immutable value: a lazy match is pickled with its highlights found.
    """

    __slots__ = ("_doc", "_highlights", "_in_title", "_source", "rule")

    def __init__(self, rule: str, highlights: tuple[Highlight, ...]) -> None:
        self.rule = rule
        self._highlights: tuple[Highlight, ...] | None = highlights
        self._in_title: bool | None = None
        self._source: HighlightSource | None = None
        self._doc = 0

    @classmethod
    def lazy(cls, rule: str, in_title: bool, source: HighlightSource, doc: int) -> RuleMatch:
        """A match whose highlights ``source`` finds in paper ``doc`` when they are first read."""
        match = cls.__new__(cls)
        match.rule, match._highlights, match._in_title, match._source, match._doc = rule, None, in_title, source, doc
        return match

    @property
    def highlights(self) -> tuple[Highlight, ...]:
        found = self._highlights
        if found is None:  # two threads may both find them: the same highlights, kept once
            assert self._source is not None
            found = self._highlights = self._source.highlights(self._doc)
        return found

    @property
    def in_title(self) -> bool:
        if self._in_title is None:
            self._in_title = any(h.field == "title" for h in self.highlights)
        return self._in_title

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleMatch):
            return NotImplemented
        return self is other or (self.rule == other.rule and self.highlights == other.highlights)

    def __hash__(self) -> int:
        """By rule and the first span (equality compares them all): cheap for the render cache."""
        return hash((self.rule, self.highlights[:1]))

    def __repr__(self) -> str:
        return f"RuleMatch(rule={self.rule!r}, highlights={self.highlights!r})"

    def __reduce__(self) -> tuple[type[RuleMatch], tuple[str, tuple[Highlight, ...]]]:
        return (RuleMatch, (self.rule, self.highlights))


@dataclass(frozen=True, slots=True)
class DigestEntry:
    item: Item
    matches: tuple[RuleMatch, ...]


@dataclass(slots=True)
class Digest:
    """One subscriber's email for one cycle, before rendering."""

    subscriber: Subscriber
    entries: list[DigestEntry]
    as_of: date
    digest_id: str
    notices: list[str] = field(default_factory=list)

    @property
    def rules_matched(self) -> list[str]:
        seen: dict[str, None] = {}
        for entry in self.entries:
            for match in entry.matches:
                seen.setdefault(match.rule, None)
        return list(seen)


@dataclass(slots=True)
class SourceReport:
    name: str
    fetched: int = 0
    ok: bool = True
    error: str | None = None
    days_failed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CycleReport:
    """What one cycle did; printed as the one-line summary and kept in the store."""

    as_of: date
    started_at: datetime
    finished_at: datetime | None = None
    dry_run: bool = False
    fetched: int = 0
    new: int = 0
    matched: int = 0
    sent: int = 0
    failed: int = 0
    refused: int = 0  # of the failed: refused for good by the server for that one address (5xx)
    sources: list[SourceReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    trigger: str = "manual"  # manual (digest run), scheduled, catch-up (serve after downtime)
    stopped: bool = False  # a stop (SIGTERM) was requested during the cycle
    pending: int = 0  # digests left for the next cycle because of the stop
    # Seconds per stage (fetch, match, render, send, record, finish) and the process's peak memory
    # (MB) at the end of each: where a cycle's time goes, for `digest status` and the benchmark.
    stages: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.pending == 0 and all(source.ok for source in self.sources)

    def summary(self) -> str:
        text = f"fetched {self.fetched}, new {self.new}, matched {self.matched}, sent {self.sent}, failed {self.failed}"
        if self.dry_run:
            text += " (dry run: nothing sent or recorded)"
        down = [s.name for s in self.sources if not s.ok]
        if down:
            text += f"; source down: {', '.join(down)}"
        if self.stopped:
            text += f"; stopped early: {self.pending} digest(s) left for the next cycle"
        return text

    def to_record(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "stages": {k: round(v, 4) for k, v in self.stages.items()},
            "peak_mb": {k: round(v, 1) for k, v in self.peak_mb.items()},
            "fetched": self.fetched,
            "new": self.new,
            "matched": self.matched,
            "sent": self.sent,
            "failed": self.failed,
            "refused": self.refused,
            "ok": self.ok,
            "sources": [
                {"name": s.name, "fetched": s.fetched, "ok": s.ok, "error": s.error, "days_failed": s.days_failed}
                for s in self.sources
            ],
            "errors": self.errors,
            "trigger": self.trigger,
            "stopped": self.stopped,
            "pending": self.pending,
        }
