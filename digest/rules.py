"""Keyword rules: parse a rule, and evaluate it over an index of items.

This module holds the base form of SPEC.md: a word or phrase matches where its tokens stand
consecutively in the title or abstract. Evaluation goes through :class:`ItemIndex`, built once per
cycle over the candidate items, and :class:`Matcher` evaluates each distinct rule once and shares
the result between every subscriber who has it: matching costs (distinct rules × postings), not
(subscribers × rules × items) string scans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from digest.errors import RuleError
from digest.models import Highlight, Item, RuleMatch
from digest.text import Token, terms, tokenize

TEXT_FIELDS = ("title", "abstract")
MAX_RULE_LENGTH = 500


class ItemIndex:
    """Tokens with positions for each item's title and abstract, and a term → postings map."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self.tokens: list[dict[str, list[Token]]] = []
        self.postings: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        for doc, item in enumerate(self.items):
            fields = {"title": tokenize(item.title), "abstract": tokenize(item.abstract)}
            self.tokens.append(fields)
            for field_name, tokens in fields.items():
                for position, token in enumerate(tokens):
                    self.postings[token.term].append((doc, field_name, position))

    def phrase(self, phrase: Sequence[str], fields: Iterable[str] = TEXT_FIELDS) -> dict[int, list[Highlight]]:
        """Docs where the folded terms stand consecutively in one of ``fields``, with their spans."""
        wanted = set(fields)
        found: dict[int, list[Highlight]] = {}
        if not phrase:
            return found
        first, rest = phrase[0], phrase[1:]
        for doc, field_name, position in self.postings.get(first, ()):
            if field_name not in wanted:
                continue
            tokens = self.tokens[doc][field_name]
            end = position + len(rest)
            if end >= len(tokens):
                continue
            if all(tokens[position + 1 + k].term == term for k, term in enumerate(rest)):
                span = Highlight(field_name, tokens[position].start, tokens[end].end)
                found.setdefault(doc, []).append(span)
        return found


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule. ``canonical`` is the form it prints back in, and the key results are shared by."""

    text: str
    canonical: str
    phrase: tuple[str, ...]

    def evaluate(self, index: ItemIndex) -> dict[int, list[Highlight]]:
        return index.phrase(self.phrase)


def parse_rule(text: str) -> Rule:
    """Parse one rule, or raise :class:`RuleError` with the column of the problem."""
    stripped = text.strip()
    if not stripped:
        raise RuleError("empty rule: expected a word or phrase", text, 1)
    if len(stripped) > MAX_RULE_LENGTH:
        raise RuleError(f"rule is longer than {MAX_RULE_LENGTH} characters", text, MAX_RULE_LENGTH + 1)
    phrase = tuple(terms(stripped))
    if not phrase:
        raise RuleError("expected a word or phrase with at least one letter or digit", text, 1)
    return Rule(text=text, canonical=" ".join(phrase), phrase=phrase)


def parse_rules(texts: Sequence[str]) -> list[Rule]:
    """Parse a subscriber's rules; an error names the rule's 1-based number."""
    if not texts:
        raise RuleError("at least one rule is needed", "", 1, 1)
    parsed = []
    for number, text in enumerate(texts, start=1):
        try:
            parsed.append(parse_rule(text))
        except RuleError as exc:
            raise exc.numbered(number) from None
    return parsed


class Matcher:
    """Evaluates rules over one index, each distinct rule once, shared by all subscribers."""

    def __init__(self, index: ItemIndex) -> None:
        self.index = index
        self._cache: dict[str, dict[int, list[Highlight]]] = {}

    def rule_hits(self, rule: Rule) -> dict[int, list[Highlight]]:
        hits = self._cache.get(rule.canonical)
        if hits is None:
            hits = rule.evaluate(self.index)
            self._cache[rule.canonical] = hits
        return hits

    def match(self, rules: Sequence[Rule]) -> dict[int, list[RuleMatch]]:
        """Doc → the rules that matched it (in the subscriber's order) with their highlights."""
        result: dict[int, list[RuleMatch]] = {}
        for rule in rules:
            for doc, highlights in self.rule_hits(rule).items():
                result.setdefault(doc, []).append(RuleMatch(rule.text.strip(), tuple(highlights)))
        return result
