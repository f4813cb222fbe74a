"""Keyword rules: parse a subscriber's rules, and match them against one cycle's items.

The language itself (words, phrases, ``diffus*``, AND/OR/NOT, fields, gates, ``/regex/``) is
parsed in :mod:`digest.matching.syntax`; items are indexed once per cycle in :mod:`digest.matching.index`.
This module evaluates in two steps, each distinct (sub)expression once per cycle, keyed by its
folded canonical form and shared between every subscriber who has it, so matching costs (distinct
rules × postings), not (subscribers × rules × items) string scans:

* :class:`Decider` decides which papers an expression matches, from sets of papers alone (postings,
  set operations, one RE2 search per value): the one walk of the rule tree that decides;
* :class:`Matcher` then finds the highlights, only in the papers decided and at most
  :data:`~digest.matching.index.MAX_SPANS` per paper, field and part of the rule, so that the cost of
  any rule within the limits stays bounded (``bench/rules.md``).

A rule made only of negations (``-survey``, ``NOT survey``, ``-survey -review``) is a subscriber-level
exclusion: what it names is removed from the matches of all of that subscriber's other rules.
"""

from __future__ import annotations

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
    """
    node, warnings = parse_with_warnings(text)
    return Rule(
        text=text,
        canonical=show(node),
        key=show(node, folded=True),
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


class Matcher:
    """Matches rules over one index: a :class:`Decider` decides, then highlights are found in the
    papers decided only; every distinct expression once, shared by all subscribers.

    Under a :class:`Budget` (the web preview) each evaluation may raise :class:`OverBudget`; what
    was complete before stays cached, so the rules evaluated so far can still be merged.
    """

    def __init__(self, index: ItemIndex, budget: Budget = UNBOUNDED) -> None:
        self.index = index
        self.budget = budget
        self.decider = Decider(index, budget)
        self._cache: dict[tuple[tuple[str, ...], str], Hits] = {}
        self._explained: dict[str, dict[int, tuple[RuleMatch, ...]]] = {}  # by rule text, which fixes its key

    def rule_hits(self, rule: Rule) -> Hits:
        """Docs the rule matches on its own, with the spans of the words that made it match."""
        return self.hits(rule.node)

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
        """Doc → why the rule matched it (a one-rule tuple); built once per rule text, shared."""
        found = self._explained.get(rule.text)
        if found is None:
            text = rule.text.strip()
            hits = self.rule_hits(rule)
            found = self._explained[rule.text] = {doc: (RuleMatch(text, _tidy(h)),) for doc, h in hits.items()}
        return found

    def hits(self, node: Node, fields: tuple[str, ...] = TEXT_FIELDS) -> Hits:
        key = (fields, show(node, folded=True))
        found = self._cache.get(key)
        if found is None:
            self.budget.check()
            found = self._cache[key] = self._evaluate(node, fields)
        return found

    def _evaluate(self, node: Node, fields: tuple[str, ...]) -> Hits:
        if isinstance(node, Phrase):
            # A phrase is found with its spans in one pass over the docs holding its first word;
            # the decision is what it found (and is shared with the Decider).
            hits = self.index.phrase(node.words, fields, self.budget)
            in_title = {doc for doc, spans in hits.items() if spans[0].field == "title"}
            self.decider.learn(node, fields, Decided(set(hits), in_title))
            return hits
        if isinstance(node, Scope):
            return self.hits(node.child, (node.field,))
        docs = self.decider.decide(node, fields).docs
        found: Hits = {doc: [] for doc in sorted(docs)}
        self._spans(node, fields, docs, found)
        return found

    def _spans(self, node: Node, fields: tuple[str, ...], docs: set[int], out: Hits) -> None:
        """Add to ``out`` the highlights of the parts of ``node`` that hold in ``docs`` (all of
        which ``node`` matches): the second walk of the tree, over the decided docs only."""
        if not docs:
            return
        index, budget = self.index, self.budget
        found: Hits = {}
        match node:
            case Phrase(words):
                whole = self._cache.get((fields, show(node, folded=True)))
                found = whole if whole is not None else index.phrase(words, fields, budget, docs)
            case Near(left, right, distance):
                found = index.near((left.words, right.words), distance, fields, budget, docs)
            case Regex(pattern, ignore_case):
                found = index.regex(pattern, ignore_case, fields, budget, docs)
            case Scope(field, child):
                self._spans(child, (field,), docs, out)
            case Or(children) | And(children):
                full = budget.spans * len(fields)  # a doc this rule has marked enough in already
                for child in children:
                    wanted = {doc for doc in docs if len(out[doc]) < full}
                    if isinstance(node, Or):
                        wanted &= self.decider.decide(child, fields).docs
                    self._spans(child, fields, wanted, out)
        for doc in docs.intersection(found):
            out[doc].extend(found[doc])


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
    then finds highlights in the docs decided; the web preview uses it alone and asks a Matcher
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
        key = (fields, show(node, folded=True))
        found = self._cache.get(key)
        if found is None:
            self.budget.check()
            found = self._cache[key] = self._evaluate(node, fields)
        return found

    def learn(self, node: Node, fields: tuple[str, ...], decided: Decided) -> None:
        """Keep what a :class:`Matcher` found for ``node`` while finding its highlights."""
        self._cache.setdefault((fields, show(node, folded=True)), decided)

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


def _number(item: Item, name: str) -> int:
    return item.upvotes if name == "upvotes" else item.comments


def _tidy(highlights: list[Highlight]) -> tuple[Highlight, ...]:
    """Each span once, title first, in reading order."""
    if len(highlights) < 2:
        return tuple(highlights)
    last = len(FIELD_ORDER)
    return tuple(sorted(set(highlights), key=lambda h: (FIELD_ORDER.get(h.field, last), h.start, h.end)))
