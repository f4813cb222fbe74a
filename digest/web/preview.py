"""The live preview of the sign-up form: which stored papers of the last days a set of rules matches.

Anyone can ask for a preview, with any rules the form accepts, so its cost is bounded whatever
they write (``bench/preview.md`` has the figures):

* caps per preview on words ending in ``*``, regular expressions and terms in all (the rules after
  the one that reaches a cap are left out, and the answer says so);
* a time budget: matching stops at the deadline and the answer shows the rules checked so far,
  with a note; the digest itself always checks every rule;
* matches are decided as sets of papers (:class:`~digest.matching.rules.Decider`: postings, set operations,
  one RE2 search per value), which is all the ranking needs; only the papers shown, at most
  :data:`MAX_SHOWN`, are matched again on their own for the highlights to mark;
* all of it runs in :data:`WORKER`, one thread per process with a short queue, never on the event
  loop, so other pages answer while a preview is computed.

The web layer reads the store and caches the :class:`~digest.matching.rules.ItemIndex`; the rest is here.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from typing import ParamSpec, TypeVar

from markupsafe import Markup

from digest.errors import PreviewBusy, RuleError
from digest.mail.highlight import mark
from digest.matching.ranking import rank_key
from digest.matching.rules import (
    Budget,
    Decided,
    Decider,
    ItemIndex,
    Matcher,
    OverBudget,
    Rule,
    parse_rule,
    parse_rules,
)
from digest.matching.spans import spans_for
from digest.matching.syntax import Phrase, Regex, leaves
from digest.models import DigestEntry, Item, RuleMatch
from digest.state.subscriptions import check_rules

PREVIEW_DAYS = 7
MAX_SHOWN = 20
SNIPPET_CHARS = 110  # either side of the first match in the abstract

MATCH_SECONDS = 0.2  # deciding the matches of all rules
SHOW_SECONDS = 0.05  # then the highlights of the papers shown
MAX_PREFIXES = 20  # words ending in "*", in all the rules of one preview
MAX_REGEXES = 10
MAX_TERMS = 150  # words, phrases and regular expressions
SHOWN_SPANS = 24  # highlights per paper, field and term in the papers shown
MAX_WAITING = 8  # previews queued or running in the worker; more are told to wait
SWITCH_SECONDS = 0.001  # how often the interpreter hands the GIL over while previews run (default 5 ms)

P = ParamSpec("P")
T = TypeVar("T")
Decision = tuple[Rule, Decided]  # a rule and the papers it matches


@dataclass(frozen=True, slots=True)
class PreviewEntry:
    title_html: Markup
    url: str
    listed_on: date
    rules: tuple[str, ...]
    snippet_html: Markup | None


@dataclass(frozen=True, slots=True)
class Preview:
    """What the preview shows. ``notes`` say what it left out (a cap, the time budget); then
    ``matched`` counts only the rules it checked."""

    entries: tuple[PreviewEntry, ...]
    matched: int
    considered: int
    notes: tuple[str, ...] = ()
    days: int = PREVIEW_DAYS
    warnings: tuple[str, ...] = ()  # how a rule may be misread ("video or audio" is one phrase)

    @property
    def count_text(self) -> str:
        """The one line shown under the rules field: "12 papers in the last 7 days"."""
        papers = "paper" if self.matched == 1 else "papers"
        text = f"{self.matched} {papers} in the last {self.days} days"
        return f"{text} (not all rules checked)" if self.notes else text


@dataclass(frozen=True, slots=True)
class Cost:
    """What one rule asks of the index, counted for the caps."""

    prefixes: int = 0
    regexes: int = 0
    terms: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.prefixes + other.prefixes, self.regexes + other.regexes, self.terms + other.terms)


def rule_cost(rule: Rule) -> Cost:
    cost = Cost()
    for leaf in leaves(rule.node):
        if isinstance(leaf, Phrase):
            cost += Cost(prefixes=sum(word.prefix for word in leaf.words), terms=1)
        elif isinstance(leaf, Regex):
            cost += Cost(regexes=1, terms=1)
    return cost


def within_caps(rules: Sequence[Rule]) -> tuple[list[Rule], tuple[str, ...]]:
    """The rules, in order, up to the first that would take the preview past a cap; and a note
    naming where it stopped and why."""
    total = Cost()
    for number, rule in enumerate(rules):
        total += rule_cost(rule)
        reason = None
        if total.prefixes > MAX_PREFIXES:
            reason = f"at most {MAX_PREFIXES} words ending in * (such as diffus*)"
        elif total.regexes > MAX_REGEXES:
            reason = f"at most {MAX_REGEXES} regular expressions"
        elif total.terms > MAX_TERMS:
            reason = f"at most {MAX_TERMS} words, phrases and regular expressions"
        if reason:
            return list(rules[:number]), (_left_out(rules[number:], f"the preview checks {reason} at a time"),)
    return list(rules), ()


def _left_out(rules: Sequence[Rule], why: str) -> str:
    more = len(rules) - 1
    after = f" and the {more} rules after it" if more > 1 else " and the rule after it" if more else ""
    return f"Not previewed: “{rules[0].text.strip()}”{after} ({why}). Your digest still checks every rule."


def snippet(text: str, spans: Sequence[tuple[int, int]], reach: int = SNIPPET_CHARS) -> Markup | None:
    """The abstract around its first match, cut at spaces, with the matches in that window marked."""
    if not spans:
        return None
    first = min(start for start, _ in spans)
    low = max(0, first - reach)
    high = min(len(text), first + reach)
    if low > 0:
        space = text.find(" ", low, first)
        low = space + 1 if space != -1 else low
    if high < len(text):
        space = text.rfind(" ", first, high)
        high = space if space > first else high
    inside = [(s - low, e - low) for s, e in spans if s >= low and e <= high]
    body = mark(text[low:high], inside)
    return Markup("{}{}{}").format("… " if low > 0 else "", body, " …" if high < len(text) else "")


def build_preview(
    index: ItemIndex,
    rules: Sequence[Rule],
    limit: int = MAX_SHOWN,
    *,
    seconds: float = MATCH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Preview:
    """The papers ``rules`` match, ranked as the digest ranks them, the first ``limit`` shown.

    Matches are decided as sets of papers (:class:`~digest.matching.rules.Decider`), which also say whether
    a rule matched in the title: with the rules matched, all that the digest's ranking needs. The
    papers shown are then matched again on their own, for the highlights.
    """
    kept, notes = within_caps(rules)
    started = clock()
    done, late = _decide(index, kept, started + seconds)
    order = _ranked(index, done)
    budget = Budget(deadline=max(clock(), started + seconds) + SHOW_SECONDS, spans=SHOWN_SPANS)
    shown = [index.items[doc] for doc in order[:limit]]
    matches, unmarked = _highlighted(shown, order[:limit], done, budget)
    entries = [_entry(item, matched) for item, matched in zip(shown, matches, strict=True)]
    return Preview(tuple(entries), matched=len(order), considered=len(index.items), notes=notes + late + unmarked)


def _decide(index: ItemIndex, rules: Sequence[Rule], deadline: float) -> tuple[list[Decision], tuple[str, ...]]:
    """Each rule's papers, in order, until ``deadline``; then a note naming the rules left unchecked."""
    decider = Decider(index, Budget(deadline=deadline))
    done: list[Decision] = []
    try:
        for rule in rules:
            done.append((rule, decider.decide(rule.excludes if rule.excludes is not None else rule.node)))
    except OverBudget:
        return done, (_left_out(rules[len(done) :], "checking it would take too long here"),)
    return done, ()


def _ranked(index: ItemIndex, done: Sequence[Decision]) -> list[int]:
    """The papers matched and not excluded (nor withdrawn), as :func:`digest.matching.ranking.rank_key`
    orders them: more rules matched, then a title match, then upvotes, then title."""
    dropped = {doc for doc, item in enumerate(index.items) if item.withdrawn}
    dropped.update(*(decided.docs for rule, decided in done if rule.is_exclusion))
    ranks: dict[int, list[int]] = {}  # doc → [rules matched, matched in the title]
    seen: set[str] = set()
    for rule, decided in done:
        text = rule.text.strip()
        if rule.is_exclusion or text in seen:
            continue
        seen.add(text)
        for doc in decided.docs - dropped:
            rank = ranks.setdefault(doc, [0, False])
            rank[0] += 1
            rank[1] |= doc in decided.in_title
    return sorted(ranks, key=lambda doc: (-ranks[doc][0], not ranks[doc][1], *_paper_key(index.items[doc]), doc))


def _highlighted(
    shown: Sequence[Item], docs: Sequence[int], done: Sequence[Decision], budget: Budget
) -> tuple[list[Sequence[RuleMatch]], tuple[str, ...]]:
    """The rules each paper shown matches, with their highlights; without them (and a note saying
    so) when marking them would go past ``budget``."""
    try:
        found = Matcher(ItemIndex(shown), budget).match([rule for rule, _ in done])
        # Highlights are found when read: read here, under the budget.
        return [tuple(RuleMatch(m.rule, m.highlights) for m in found.get(doc, ())) for doc in range(len(shown))], ()
    except OverBudget:
        matches: list[Sequence[RuleMatch]] = [
            tuple(RuleMatch(rule.text.strip(), ()) for rule, decided in done if doc in decided.docs) for doc in docs
        ]
        return matches, ("The matched words are not marked: that would take too long here.",)


def _paper_key(item: Item) -> tuple[int, str]:
    """The part of :func:`digest.matching.ranking.rank_key` that depends on the paper alone."""
    return rank_key(DigestEntry(item, ()))[2:]


def _entry(item: Item, matched: Sequence[RuleMatch]) -> PreviewEntry:
    highlights = [h for m in matched for h in m.highlights]
    return PreviewEntry(
        title_html=mark(item.title, spans_for(highlights, "title")),
        url=item.url,
        listed_on=item.listed_on,
        rules=tuple(dict.fromkeys(m.rule for m in matched)),
        snippet_html=snippet(item.abstract, spans_for(highlights, "abstract")),
    )


def preview_rules(rules_text: str, index: Callable[[], ItemIndex]) -> tuple[Preview | None, tuple[str, ...]]:
    """The preview of the rules that parse, and the problems of those that do not (pure but for
    ``index``, which reads the store only when some rule parses)."""
    check = check_rules(rules_text)
    good = [rule for rule in check.rules if _parses(rule)]
    if not good:
        return None, check.errors if rules_text.strip() else ()
    try:
        rules = parse_rules(good)
    except RuleError:  # a check across the rules as a whole; check_rules has already said which
        return None, check.errors
    preview = build_preview(index(), rules)
    # A misreading ("video or audio" is one phrase) is a note beside the matches, not a refusal.
    warnings = tuple(f"“{rule.text}”: {warning}" for rule in rules for warning in rule.warnings)
    return (replace(preview, warnings=warnings) if warnings else preview), check.errors


def _parses(rule: str) -> bool:
    try:
        parse_rule(rule)
    except RuleError:
        return False
    return True


PREVIEW_BUSY = "Many previews are being computed right now: yours will show in a moment."


class PreviewWorker:
    """One thread for the previews of the process, with a short queue.

    A preview is Python work that holds the GIL; in a pool of threads, ten at once would take
    turns with the event loop ten ways and every page would wait. One thread leaves the loop its
    share, and each preview's own budget bounds how long the queue takes. The interpreter's switch
    interval drops to :data:`SWITCH_SECONDS` once the first preview runs: the event loop waits for
    the GIL at every socket call, up to one interval each time (5 ms by default).
    """

    def __init__(self, waiting: int = MAX_WAITING) -> None:
        self.waiting = waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-preview")
        self._lock = threading.Lock()
        self._pending = 0

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            if self._pending >= self.waiting:
                raise PreviewBusy()
            self._pending += 1
            if sys.getswitchinterval() > SWITCH_SECONDS:
                sys.setswitchinterval(SWITCH_SECONDS)
        try:
            return await asyncio.wrap_future(self._executor.submit(work, *args, **kwargs))
        finally:
            with self._lock:
                self._pending -= 1


WORKER = PreviewWorker()
