"""An index of one cycle's items, built once, that the rule evaluator asks instead of scanning text.

A field (title, abstract, author, …) is tokenized for every item the first time a rule asks
for it (most rules search only titles and abstracts): terms plus character offsets, and for every
term the items whose field holds it (postings). Titles, abstracts and other fields of one value are
cut for all items in one batch (:mod:`digest.word_batch`). A phrase then costs the items holding its first
word, not a scan of every item; a prefix (``diffus*``) looks up the sorted vocabulary (bisect) and
then the postings of the terms it covers, so it too never reads a field token by token; a regular
expression runs RE2 over the field texts. Multi-valued fields (authors, keywords, categories) keep
their values apart, so a phrase never runs from one author's name into the next.

A :class:`Budget` bounds one evaluation whatever the rules (the web preview answers strangers): a
deadline, checked between units of work of bounded size, and a cap on highlights per item and field.
The daily cycle runs unbounded, so its matches and highlights are complete. The preview decides its
matches with :meth:`ItemIndex.phrase_docs` and :meth:`ItemIndex.regex_docs`: sets of docs, no
highlights, one RE2 search per value and no more.
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import re2

from digest.models import Highlight, Item
from digest.rule_syntax import FIELDS, Word, compile_regex
from digest.text import cut_words, fold, fold_all
from digest.word_batch import cut_many

SEPARATOR = "\n"  # between the values of a multi-valued field in its text
FIELD_ORDER = {name: k for k, name in enumerate(FIELDS)}  # the order spans are listed in

Hits = dict[int, list[Highlight]]
Docs = tuple[set[int], set[int]]  # the docs found, and those of them found in the title


class OverBudget(Exception):
    """An evaluation under a :class:`Budget` reached its deadline; nothing partial was kept."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Bounds for one evaluation: a ``time.monotonic()`` deadline, and at most ``spans`` highlights
    per item and field (which items match never depends on it; the first spans are kept, so the
    first match of a field and whether a title matched stay as they are)."""

    deadline: float = math.inf
    spans: int = sys.maxsize

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise OverBudget()


UNBOUNDED = Budget()


def surfaces_of(term: str) -> tuple[str, ...]:
    """Every case-folded word that folds to ``term``: itself, and the plurals that fold to it
    (``+s``, ``+es`` after ``ss``, ``y`` → ``ies``), as :func:`digest.text.fold` decides."""
    forms = (term, term + "s", term + "es", term[:-1] + "ies" if term.endswith("y") else "")
    return tuple(form for form in forms if form and fold(form) == term)


_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)  # google-re2's, for RE2::Match


def matches(compiled: re2._Regexp, text: str) -> Iterator[tuple[int, int]]:
    """The non-empty matches ``compiled.finditer(text)`` finds, as (start, end) offsets.

    google-re2's ``finditer`` spends microseconds of Python on each match; for ASCII text (byte
    and character offsets agree) this asks RE2 itself, through the ``Match`` that ``finditer``
    calls, stepping past an empty match as ``finditer`` does. Other text, or a google-re2 without
    that method, goes through ``finditer``.
    """
    raw = getattr(compiled, "_regexp", None)
    if raw is None or _UNANCHORED is None or not text.isascii():
        for found in compiled.finditer(text):
            if found.end() > found.start():
                yield found.start(), found.end()
        return
    data = text.encode("ascii")
    at, end = 0, len(data)
    while True:
        start, stop = raw.Match(_UNANCHORED, data, at, end)[0]
        if start < 0:
            return
        if stop > start:
            yield start, stop
        if at == end:
            return
        at = at + 1 if at == stop else stop


def has_match(compiled: re2._Regexp, text: str) -> bool:
    """Whether ``compiled`` finds a non-empty match in ``text`` (:func:`matches`, stopping at one)."""
    return next(matches(compiled, text), None) is not None


@dataclass(frozen=True, slots=True)
class Terms:
    """The terms a word of a rule stands for in one field: ``whole`` matches every token of those
    terms; a token of a ``partial`` term only when its case-folded surface is one of those listed
    (``study*`` matches "study" but not "studies", which folds to the same term)."""

    whole: frozenset[str]
    partial: dict[str, frozenset[str]]


def field_values(item: Item, field: str) -> tuple[str, ...]:
    """The values a rule field searches: ``author:`` searches each author's name, and so on."""
    match field:
        case "title":
            return (item.title,)
        case "abstract":
            return (item.abstract,)
        case "author":
            return item.authors
        case "org":
            return (item.organization,) if item.organization else ()
        case "keyword":
            return item.ai_keywords
        case "source":
            return (item.source,)
        case "category":
            return item.categories
    raise ValueError(f"unknown field {field!r}")


def field_text(item: Item, field: str) -> str:
    """The text a :class:`Highlight` of ``field`` indexes: the item's title or abstract itself, or
    the values of a multi-valued field joined by a line break."""
    return SEPARATOR.join(field_values(item, field))


@dataclass(slots=True)
class FieldTokens:
    """One field of one item: its text, value boundaries, and terms with their offsets.

    ``bounds`` holds running offsets: term k starts at ``bounds[2k]`` and ends at ``bounds[2k + 1]``.
    """

    text: str
    segments: list[tuple[int, int]]
    terms: list[str]  # "" marks the boundary between two values: it never equals a rule word
    bounds: array[int]
    _joined: str = ""  # " t1 t2 … " on first use, for phrase searches

    def start(self, position: int) -> int:
        return self.bounds[2 * position]

    def end(self, position: int) -> int:
        return self.bounds[2 * position + 1]

    def surface(self, position: int) -> str:
        return self.text[self.start(position) : self.end(position)]

    def fits(self, position: int, terms: Terms) -> bool:
        """Whether the token at ``position`` is one that ``terms`` stands for."""
        term = self.terms[position]
        if term in terms.whole:
            return True
        surfaces = terms.partial.get(term)
        return surfaces is not None and self.surface(position).casefold() in surfaces

    def positions(self, term: str) -> Iterator[int]:
        """Where ``term`` stands: a substring search (in C) for " term " in the joined terms."""
        joined = self.joined()
        needle = f" {term} "
        at, position, counted = joined.find(needle), 0, 0
        while at >= 0:
            position += joined.count(" ", counted, at)
            counted = at
            yield position
            at = joined.find(needle, at + 1)

    def joined(self) -> str:
        if not self._joined:
            self._joined = f" {' '.join(self.terms)} "
        return self._joined


def field_tokens(values: Sequence[str]) -> FieldTokens:
    """Tokenize a field's values (several authors, say), keeping them apart.

    A field of one value (a title, an abstract) is cut with the other items' in one batch instead
    (:meth:`FieldIndex.build`).
    """
    tokens = FieldTokens(SEPARATOR.join(values), [], [], array("q"))
    offset = 0
    for number, value in enumerate(values):
        if number:
            tokens.terms.append("")
            tokens.bounds.extend((offset - 1, offset - 1))
        tokens.segments.append((offset, offset + len(value)))
        written, bounds = cut_words(value)
        tokens.terms.extend(fold_all(written))
        tokens.bounds.extend(offset + bound for bound in bounds[:-1])
        offset += len(value) + len(SEPARATOR)
    return tokens


@dataclass(slots=True)
class FieldIndex:
    """One field of every item: the tokens (None where an item has no value) and term → docs."""

    tokens: list[FieldTokens | None]
    postings: dict[str, array[int]]
    _vocabulary: list[str] = field(default_factory=list)  # sorted terms, on the first prefix
    _prefixes: dict[str, Terms] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Sequence[Item], name: str) -> FieldIndex:
        column: list[FieldTokens | None] = []
        postings: dict[str, list[int]] = defaultdict(list)
        values = [field_values(item, name) for item in items]
        singles = iter(cut_many([value[0] for value in values if len(value) == 1]))
        for doc, value in enumerate(values):
            tokens: FieldTokens | None = None
            if len(value) == 1:
                written, bounds = next(singles)
                tokens = FieldTokens(value[0], [(0, len(value[0]))], fold_all(written), bounds)
            elif value:
                tokens = field_tokens(value)
            column.append(tokens)
            if tokens is not None:
                for term in set(tokens.terms):
                    postings[term].append(doc)
        postings.pop("", None)
        return cls(column, {term: array("l", docs) for term, docs in postings.items()})

    def terms(self, word: Word) -> Terms:
        """The terms ``word`` stands for: its own, or for a prefix those of the words starting
        with it, found by bisecting the sorted vocabulary (cost: the terms covered, never the tokens).

        A prefix compares with a word's case-folded surface, and folding a plural changes at most
        its last three letters (ies → y, sses → ss, s → ""): so a surface that starts with ``p``
        folds to a term that starts with ``p`` too, or to ``p`` less its last letter or two, with
        or without y. Each such term's surfaces (:func:`surfaces_of`) then say exactly whether all,
        some or none of its tokens match.
        """
        if not word.prefix:
            return Terms(frozenset((word.term,)), {})
        prefix = word.term
        found = self._prefixes.get(prefix)
        if found is not None:
            return found
        if not self._vocabulary:
            self._vocabulary = sorted(self.postings)
        vocabulary = self._vocabulary
        terms = {prefix[:-cut] + end for cut in (1, 2, 3) for end in ("", "y") if cut < len(prefix)}
        terms.intersection_update(self.postings)
        for k in range(bisect.bisect_left(vocabulary, prefix), len(vocabulary)):
            if not vocabulary[k].startswith(prefix):
                break
            terms.add(vocabulary[k])
        whole: set[str] = set()
        partial: dict[str, frozenset[str]] = {}
        for term in terms:
            forms = surfaces_of(term)
            fitting = frozenset(form for form in forms if form.startswith(prefix))
            if len(fitting) == len(forms):
                whole.add(term)
            elif fitting:
                partial[term] = fitting
        found = self._prefixes[prefix] = Terms(frozenset(whole), partial)
        return found

    def joined(self, doc: int) -> str:
        tokens = self.tokens[doc]
        return tokens.joined() if tokens is not None else ""

    def candidates(self, word: Word) -> Iterable[int]:
        """Docs that hold ``word``: its term's postings, or those of every term a prefix covers."""
        if not word.prefix:
            return self.postings.get(word.term, ())
        terms = self.terms(word)
        return sorted({doc for term in (*terms.whole, *terms.partial) for doc in self.postings.get(term, ())})


class ItemIndex:
    """The items of one cycle, each field tokenized on first use, shared by every rule."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self._fields: dict[str, FieldIndex] = {}

    def __len__(self) -> int:
        return len(self.items)

    def field(self, name: str) -> FieldIndex:
        found = self._fields.get(name)
        if found is None:
            found = self._fields[name] = FieldIndex.build(self.items, name)
        return found

    # -- lookups ------------------------------------------------------------------------------
    def phrase(self, words: Sequence[Word], fields: Iterable[str], budget: Budget = UNBOUNDED) -> Hits:
        """Docs where ``words`` stand one after another in one of ``fields``, with their spans
        (docs in order; within a doc, fields in :data:`FIELDS` order, then positions).

        Whole words are found by one substring search (in C) for " t1 t2 " in a field's terms
        joined by spaces; the number of spaces before a find is its token position. A value
        boundary ("") joins as a double space, which no phrase spans. A phrase with a prefix word
        goes through :meth:`_loose_phrase`.
        """
        if any(word.prefix for word in words):
            return self._loose_phrase(words, fields, budget)
        needle = f" {' '.join(word.term for word in words)} "
        found: Hits = {}
        names = sorted(fields, key=FIELD_ORDER.__getitem__)
        last = len(words) - 1
        cap = budget.spans
        for name in names:
            budget.check()
            column = self.field(name)
            for doc in column.candidates(words[0]):
                tokens = column.tokens[doc]
                assert tokens is not None
                # Inline, not a generator per candidate (that cost a fifth of all matching).
                joined, bounds = tokens.joined(), tokens.bounds
                at = joined.find(needle)
                kept = 0
                while at >= 0 and kept < cap:
                    position = joined.count(" ", 0, at)
                    span = Highlight(name, bounds[2 * position], bounds[2 * (position + last) + 1])
                    found.setdefault(doc, []).append(span)
                    kept += 1
                    at = joined.find(needle, at + 1)
        return dict(sorted(found.items())) if len(names) > 1 else found

    def _loose_phrase(self, words: Sequence[Word], fields: Iterable[str], budget: Budget) -> Hits:
        """A phrase with a prefix word: where a term the first word stands for occurs (postings,
        then a substring search per doc), each following word checked at its position only."""
        found: Hits = {}
        names = sorted(fields, key=FIELD_ORDER.__getitem__)
        last = len(words) - 1
        for name in names:
            column = self.field(name)
            wanted = [column.terms(word) for word in words]
            starts: dict[int, list[int]] = {}
            for term in (*wanted[0].whole, *wanted[0].partial):
                budget.check()
                for doc in column.postings.get(term, ()):
                    tokens = column.tokens[doc]
                    assert tokens is not None
                    starts.setdefault(doc, []).extend(tokens.positions(term))
            for doc in sorted(starts):
                tokens = column.tokens[doc]
                assert tokens is not None
                kept = 0
                for position in sorted(starts[doc]):
                    if position + last >= len(tokens.terms):
                        break
                    if all(tokens.fits(position + k, terms) for k, terms in enumerate(wanted)):
                        found.setdefault(doc, []).append(
                            Highlight(name, tokens.start(position), tokens.end(position + last))
                        )
                        kept += 1
                        if kept >= budget.spans:
                            break
        return dict(sorted(found.items())) if len(names) > 1 else found

    def regex(self, pattern: str, ignore_case: bool, fields: Iterable[str], budget: Budget = UNBOUNDED) -> Hits:
        """Docs where the RE2 ``pattern`` finds a non-empty match within one value of ``fields``."""
        compiled = compile_regex(pattern, ignore_case)
        columns = [(name, self.field(name).tokens) for name in sorted(fields, key=FIELD_ORDER.__getitem__)]
        found: Hits = {}
        cap = budget.spans
        for doc in range(len(self.items)):
            budget.check()
            for name, column in columns:
                tokens = column[doc]
                if tokens is None:
                    continue
                kept = 0
                for start, end in tokens.segments:
                    for low, high in matches(compiled, tokens.text[start:end]):
                        found.setdefault(doc, []).append(Highlight(name, start + low, start + high))
                        kept += 1
                        if kept >= cap:
                            break
                    if kept >= cap:
                        break
        return found

    # -- decisions: which docs, no highlights (the preview) -------------------------------------
    def phrase_docs(self, words: Sequence[Word], fields: Iterable[str], budget: Budget = UNBOUNDED) -> Docs:
        """The docs :meth:`phrase` finds, and those it finds in the title, from postings: a doc
        must hold every word (a set intersection), and only then is the order checked in it."""
        found: set[int] = set()
        in_title: set[int] = set()
        for name in sorted(fields, key=FIELD_ORDER.__getitem__):
            budget.check()
            column = self.field(name)
            wanted = [column.terms(word) for word in words]
            holding = []
            for terms in wanted:
                docs: set[int] = set()
                for term in (*terms.whole, *terms.partial):
                    docs.update(column.postings.get(term, ()))
                holding.append(docs)
            holding.sort(key=len)
            candidates = holding[0].intersection(*holding[1:])
            if len(words) == 1 and not wanted[0].partial:
                docs = candidates
            elif not any(word.prefix for word in words):
                needle = f" {' '.join(word.term for word in words)} "
                docs = {doc for doc in candidates if needle in column.joined(doc)}
            else:
                docs = self._loose_docs(column, wanted, candidates, budget)
            found |= docs
            if name == "title":
                in_title |= docs
        return found, in_title

    @staticmethod
    def _loose_docs(column: FieldIndex, wanted: list[Terms], candidates: set[int], budget: Budget) -> set[int]:
        """Candidates where the words (one a prefix) stand in order: each place the first word's
        terms stand is checked, until one fits."""
        anchors: dict[int, list[str]] = {}
        for term in (*wanted[0].whole, *wanted[0].partial):
            for doc in column.postings.get(term, ()):
                if doc in candidates:
                    anchors.setdefault(doc, []).append(term)
        last = len(wanted) - 1
        docs = set()
        for doc, terms in anchors.items():
            budget.check()
            tokens = column.tokens[doc]
            assert tokens is not None
            for position in (p for term in terms for p in tokens.positions(term)):
                if position + last < len(tokens.terms) and all(
                    tokens.fits(position + k, want) for k, want in enumerate(wanted)
                ):
                    docs.add(doc)
                    break
        return docs

    def regex_docs(self, pattern: str, ignore_case: bool, fields: Iterable[str], budget: Budget = UNBOUNDED) -> Docs:
        """The docs :meth:`regex` finds, and those it finds in the title: one search per value."""
        compiled = compile_regex(pattern, ignore_case)
        found: set[int] = set()
        in_title: set[int] = set()
        for name in sorted(fields, key=FIELD_ORDER.__getitem__):
            column = self.field(name).tokens
            for doc, tokens in enumerate(column):
                budget.check()
                if tokens is None or (doc in found and name != "title"):
                    continue
                if any(has_match(compiled, tokens.text[start:end]) for start, end in tokens.segments):
                    found.add(doc)
                    if name == "title":
                        in_title.add(doc)
        return found, in_title

    def where(self, admits: Callable[[Item], bool]) -> Hits:
        """Docs whose item passes a test that needs no text (``upvotes>=20``, ``has:code``)."""
        return {doc: [] for doc, item in enumerate(self.items) if admits(item)}
