"""Keyword rules: parse a subscriber's rules, and match them against one cycle's items.

The language itself (words, phrases, ``diffus*``, AND/OR/NOT, fields, gates, ``/regex/``) is
parsed in :mod:`digest.matching.syntax`; items are indexed once per cycle in :mod:`digest.matching.index`.
This module evaluates in two steps, each distinct (sub)expression once per cycle, keyed by its
folded canonical form and shared between every subscriber who has it, so matching costs (distinct
rules × postings), not (subscribers × rules × items) string scans:

* :class:`Decider` decides which papers an expression matches, from sets of papers alone (postings,
  set operations, one RE2 search per value): the one walk of the rule tree that decides;
* :class:`Matcher` then finds the highlights of a match when they are first read (a digest shows
  a few dozen papers; the rest of a rule's matches never build one), a batch of that rule's papers
  at a time and at most :data:`~digest.matching.index.MAX_SPANS` per field and part of the rule, so
  that the cost of any rule within the limits stays bounded (``bench/rules.md``).

A rule made only of negations (``-survey``, ``NOT survey``, ``-survey -review``) is a subscriber-level
exclusion: what it names is removed from the matches of all of that subscriber's other rules.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from digest.errors import RuleError
from digest.matching.index import (
    FIELD_ORDER,
    SEPARATOR,
    UNBOUNDED,
    Budget,
    Hits,
    ItemIndex,
    OverBudget,
    field_text,
    field_values,
)
from digest.matching.syntax import (
    FIELDS,
    MAX_RULE_LENGTH,
    TEXT_FIELDS,
    And,
    Gate,
    HasCode,
    Near,
    Node,
    Not,
    Or,
    Phrase,
    Regex,
    Scope,
    parse_with_warnings,
    show,
)
from digest.models import Highlight, Item, RuleMatch
from digest.text import first_control

SPANS_BATCH = 64  # matches whose highlights are found together (Spans)

__all__ = [
    "FIELDS",
    "MAX_RULE_LENGTH",
    "SEPARATOR",
    "TEXT_FIELDS",
    "UNBOUNDED",
    "Budget",
    "Decided",
    "Decider",
    "ItemIndex",
    "Matcher",
    "Near",
    "OverBudget",
    "Rule",
    "Spans",
    "field_text",
    "field_values",
    "parse_rule",
    "parse_rules",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule. ``canonical`` is the form it prints back in; ``key`` (words folded) is what
    evaluation is shared by. ``excludes`` is set for an exclusion: the expression it removes."""

    text: str
    canonical: str
    key: str
    node: Node
    excludes: Node | None = None
    warnings: tuple[str, ...] = ()  # what was read literally that is often meant otherwise

    @property
    def is_exclusion(self) -> bool:
        return self.excludes is not None


def _excluded(node: Node) -> Node | None:
    """What a rule made only of negations removes (De Morgan), or None if it can select papers.

    ``NOT x`` → x; ``-a -b`` (NOT a AND NOT b) → a OR b; ``-a OR -b`` → a AND b.
    """
    if isinstance(node, Not):
        return node.child
    if isinstance(node, And | Or):
        inner = [_excluded(child) for child in node.children]
        if all(part is not None for part in inner):
            parts = tuple(part for part in inner if part is not None)
            return Or(parts) if isinstance(node, And) else And(parts)
    return None


@lru_cache(maxsize=65536)
def parse_rule(text: str) -> Rule:
    """Parse one rule, or raise :class:`RuleError` with the column of the problem.

    Cached: a cycle parses every subscriber's rules, and most rules are shared by many people.
    A control character (a NUL, a bell) is never typed, and PostgreSQL cannot even store a NUL:
    refused here, so the form, the CLI and ``digest import`` all say where it is.
    """
    control = first_control(text)
    if control is not None:
        raise RuleError(f"remove the control character U+{ord(text[control]):04X}", text, control + 1)
    node, warnings = parse_with_warnings(text)
    return Rule(
        text=text,
        canonical=show(node),
        key=node_key(node),
        node=node,
        excludes=_excluded(node),
        warnings=warnings,
    )


def parse_rules(texts: Sequence[str]) -> list[Rule]:
    """Parse a subscriber's rules; an error names the rule's 1-based number.

    A list of exclusions alone would never match anything, so it is refused rather than silently
    sending nothing.
    """
    if not texts:
        raise RuleError("at least one rule is needed", "", 1, 1)
    parsed = []
    for number, text in enumerate(texts, start=1):
        try:
            parsed.append(parse_rule(text))
        except RuleError as exc:
            raise exc.numbered(number) from None
    if all(rule.is_exclusion for rule in parsed):
        raise RuleError(
            "this rule only excludes papers; add a rule that selects some (such as 'diffusion')", texts[0], 1, 1
        )
    return parsed


def usable_rules(texts: Sequence[str]) -> tuple[list[Rule], list[RuleError]]:
    """A stored subscriber's rules that still parse, and the errors of those that do not.

    Rules are checked when they are typed; a stored one can stop parsing when the language tightens
    (a regular expression past today's limits). The others still deliver, and the digest says which
    was left out, rather than the person silently getting nothing. None usable when only
    exclusions are left: they would match nothing.
    """
    rules: list[Rule] = []
    refused: list[RuleError] = []
    for number, text in enumerate(texts, start=1):
        try:
            rules.append(parse_rule(text))
        except RuleError as exc:
            refused.append(exc.numbered(number))
    if rules and all(rule.is_exclusion for rule in rules):
        return [], refused
    return rules, refused


class Matcher:
    """Matches rules over one index: a :class:`Decider` decides, and the highlights of a match are
    found when first read (:class:`Spans`): a digest shows a few dozen of the papers a rule may
    match. Every distinct expression is decided once, shared by all subscribers.

    Under a :class:`Budget` (the web preview) deciding, and finding highlights, may raise
    :class:`OverBudget`; what was complete before stays cached, so the rules evaluated so far
    can still be merged.
    """

    def __init__(self, index: ItemIndex, budget: Budget = UNBOUNDED) -> None:
        self.index = index
        self.budget = budget
        self.decider = Decider(index, budget)
        self._spans: dict[tuple[tuple[str, ...], str], Spans] = {}
        self._explained: dict[str, dict[int, tuple[RuleMatch, ...]]] = {}  # by rule text, which fixes its key

    def match(self, rules: Sequence[Rule]) -> dict[int, tuple[RuleMatch, ...]]:
        """Doc → the rules that matched it (in the subscriber's order) with their highlights.

        ``rules`` is a subscriber's whole list: its exclusions remove docs from every other rule.
        This runs once per subscriber, so it only merges what is already computed, mostly in C:
        it copies the first rule's dict of one-rule tuples, which all subscribers share, and
        builds new tuples only for the docs that two of the subscriber's rules both match.
        """
        result: dict[int, tuple[RuleMatch, ...]] | None = None
        excluded: set[int] = set()
        cached = self._explained.get  # looked up inline: this loop runs for every rule of everyone
        for rule in rules:
            if rule.excludes is not None:
                excluded.update(self.decider.decide(rule.excludes).docs)
                continue
            explained = cached(rule.text)
            if explained is None:
                explained = self.explained(rule)
            if result is None:
                result = explained.copy()
            elif result.keys().isdisjoint(explained):
                result.update(explained)
            else:
                both = {doc: result[doc] + explained[doc] for doc in result.keys() & explained.keys()}
                result.update(explained)
                result.update(both)
        if result is None:
            return {}
        if excluded:
            for doc in excluded.intersection(result):
                del result[doc]
        return result

    def explained(self, rule: Rule) -> dict[int, tuple[RuleMatch, ...]]:
        """Doc → why the rule matched it (a one-rule tuple); built once per rule text, shared.

        Decided without a highlight: each match finds its own when first read."""
        found = self._explained.get(rule.text)
        if found is None:
            text = rule.text.strip()
            decided = self.decider.decide(rule.node)
            source, in_title, lazy = self.spans(rule.node), decided.in_title, RuleMatch.lazy
            found = self._explained[rule.text] = {
                doc: (lazy(text, doc in in_title, source, doc),) for doc in sorted(decided.docs)
            }
        return found

    def hits(self, node: Node, fields: tuple[str, ...] = TEXT_FIELDS) -> Hits:
        """Every doc ``node`` matches with its highlights, found now (``digest try``'s exclusions)."""
        found = self.find(node, fields, self.decider.decide(node, fields).docs)
        return {doc: list(found[doc]) for doc in sorted(found)}

    def spans(self, node: Node, fields: tuple[str, ...] = TEXT_FIELDS) -> Spans:
        """The highlights of ``node``, doc by doc, shared by every rule that has it."""
        key = (fields, node_key(node))
        found = self._spans.get(key)
        if found is None:
            found = self._spans[key] = Spans(self, node, fields)
        return found

    def find(self, node: Node, fields: tuple[str, ...], docs: set[int]) -> dict[int, tuple[Highlight, ...]]:
        """The highlights of ``node`` in each of ``docs``, all of which it matches: each span once,
        title first. A doc's highlights do not depend on the other docs asked with it."""
        out: Hits = {doc: [] for doc in docs}
        self._spans_in(node, fields, docs, out)
        return {doc: _tidy(spans) for doc, spans in out.items()}

    def _spans_in(self, node: Node, fields: tuple[str, ...], docs: set[int], out: Hits) -> None:
        """Add to ``out`` the highlights of the parts of ``node`` that hold in ``docs`` (all of
        which ``node`` matches): at most ``budget.spans`` per doc, field and part, and a doc marked
        enough already is still searched in its title where a part matched there, so that a doc
        has a title highlight exactly when :attr:`Decided.in_title` says so."""
        if not docs:
            return
        index, budget = self.index, self.budget
        found: Hits = {}
        match node:
            case Phrase(words):
                found = index.phrase(words, fields, budget, docs)
            case Near(left, right, distance):
                found = index.near((left.words, right.words), distance, fields, budget, docs)
            case Regex(pattern, ignore_case):
                found = index.regex(pattern, ignore_case, fields, budget, docs)
            case Scope(field, child):
                self._spans_in(child, (field,), docs, out)
            case Or(children) | And(children):
                full = budget.spans * len(fields)  # a doc this rule has marked enough in already
                for child in children:
                    if isinstance(child, Not | Gate | HasCode):
                        continue  # nothing to mark
                    decided = self.decider.decide(child, fields)
                    wanted = {doc for doc in docs if len(out[doc]) < full}
                    if isinstance(node, Or):
                        wanted &= decided.docs
                    self._spans_in(child, fields, wanted, out)
                    late = {
                        doc
                        for doc in (docs - wanted) & decided.in_title
                        if not any(h.field == "title" for h in out[doc])
                    }
                    self._spans_in(child, ("title",), late, out)
        for doc in docs.intersection(found):
            out[doc].extend(found[doc])


class Spans:
    """The highlights of one expression, found when a match is first read, once each (the
    :class:`~digest.models.HighlightSource` of :meth:`RuleMatch.lazy`).

    They are found for :data:`SPANS_BATCH` of its papers at a time, the one read and those after
    it: a search costs about as much for a few dozen papers as for one, and a cycle reads the
    matches of a rule in many digests."""

    __slots__ = ("docs", "fields", "found", "matcher", "node")

    def __init__(self, matcher: Matcher, node: Node, fields: tuple[str, ...]) -> None:
        self.matcher = matcher
        self.node = node
        self.fields = fields
        self.found: dict[int, tuple[Highlight, ...]] = {}
        self.docs: list[int] = []  # the docs it matches, in order, on first use

    def highlights(self, doc: int) -> tuple[Highlight, ...]:
        found = self.found.get(doc)
        if found is None:
            if not self.docs:
                self.docs = sorted(self.matcher.decider.decide(self.node, self.fields).docs)
            at = bisect.bisect_left(self.docs, doc)
            batch = {doc, *(d for d in self.docs[at : at + SPANS_BATCH] if d not in self.found)}
            self.found.update(self.matcher.find(self.node, self.fields, batch))
            found = self.found[doc]
        return found


@dataclass(frozen=True, slots=True)
class Decided:
    """The docs an expression matches, and those it matches with a highlight in the title (what
    :attr:`RuleMatch.in_title` would say): all that ranking needs, without building highlights."""

    docs: set[int]
    in_title: set[int]


class Decider:
    """Which docs each expression matches, from sets of docs alone.

    Words and phrases are settled by postings and set operations in C, a regular expression by one
    search per value, and a :class:`Budget` bounds the whole. :class:`Matcher` uses it to decide,
    then finds highlights in the papers shown; the web preview uses it alone and asks a Matcher
    over the few items it shows.
    """

    def __init__(self, index: ItemIndex, budget: Budget = UNBOUNDED) -> None:
        self.index = index
        self.budget = budget
        self._cache: dict[tuple[tuple[str, ...], str], Decided] = {}
        self._all: set[int] | None = None

    def everything(self) -> set[int]:
        if self._all is None:
            self._all = set(range(len(self.index)))
        return self._all

    def decide(self, node: Node, fields: tuple[str, ...] = TEXT_FIELDS) -> Decided:
        key = (fields, node_key(node))
        found = self._cache.get(key)
        if found is None:
            self.budget.check()
            found = self._cache[key] = self._evaluate(node, fields)
        return found

    def _evaluate(self, node: Node, fields: tuple[str, ...]) -> Decided:
        index = self.index
        match node:
            case Phrase(words):
                return Decided(*index.phrase_docs(words, fields, self.budget))
            case Near(left, right, distance):
                return Decided(*index.near_docs((left.words, right.words), distance, fields, self.budget))
            case Regex(pattern, ignore_case):
                return Decided(*index.regex_docs(pattern, ignore_case, fields, self.budget))
            case Gate(name, _, _):
                gate = node
                return Decided(set(index.where(lambda item: gate.admits(_number(item, name)))), set())
            case HasCode():
                return Decided(set(index.where(lambda item: bool(item.github_repo))), set())
            case Scope(field, child):
                return self.decide(child, (field,))
            case Not(child):
                return Decided(self.everything() - self.decide(child, fields).docs, set())
            case Or(children):
                parts = [self.decide(child, fields) for child in children]
                return Decided(set().union(*(p.docs for p in parts)), set().union(*(p.in_title for p in parts)))
            case And(children):
                positive = [self.decide(c, fields) for c in children if not isinstance(c, Not)]
                negative = [self.decide(c.child, fields) for c in children if isinstance(c, Not)]
                positive.sort(key=lambda p: len(p.docs))
                docs = (
                    set(self.everything())
                    if not positive
                    else positive[0].docs.intersection(*(p.docs for p in positive[1:]))
                )
                docs.difference_update(*(n.docs for n in negative))
                return Decided(docs, docs.intersection(set().union(*(p.in_title for p in positive))))
        raise AssertionError(f"unknown node {node!r}")


@lru_cache(maxsize=65536)
def node_key(node: Node) -> str:
    """What an expression's evaluation is shared by (its folded canonical form), kept: finding a
    match's highlights asks it for each part of the rule, paper by paper."""
    return show(node, folded=True)


def _number(item: Item, name: str) -> int:
    return item.upvotes if name == "upvotes" else item.comments


def _tidy(highlights: list[Highlight]) -> tuple[Highlight, ...]:
    """Each span once, title first, in reading order."""
    if len(highlights) < 2:
        return tuple(highlights)
    last = len(FIELD_ORDER)
    return tuple(sorted(set(highlights), key=lambda h: (FIELD_ORDER.get(h.field, last), h.start, h.end)))
