"""An index of one cycle's items, built once, that the rule evaluator asks instead of scanning text.

A field (title, abstract, author, …) is tokenized for every item the first time a rule asks
for it (most rules search only titles and abstracts): terms plus character offsets, and for every
term the items whose field holds it (postings). Titles, abstracts and other fields of one value are
cut for all items in one batch (:mod:`digest.matching.word_batch`). A phrase then costs the items holding its first
word, not a scan of every item; a prefix (``diffus*``) looks up the sorted vocabulary (bisect) and
then the postings of the terms it covers, so it too never reads a field token by token; a regular
expression runs RE2 over the field texts. Multi-valued fields (authors, keywords, categories) keep
their values apart, so a phrase never runs from one author's name into the next.

A :class:`Budget` bounds one evaluation whatever the rules (the web preview answers strangers): a
deadline, checked between units of work of bounded size, and a cap on highlights per item and field.
The daily cycle runs unbounded, so its matches and highlights are complete. Matches are decided
with :meth:`ItemIndex.phrase_docs`, :meth:`ItemIndex.near_docs` and :meth:`ItemIndex.regex_docs`:
sets of docs, no highlights; a proximity, or a phrase to check in many papers, is found in all
papers at once (:class:`Positions`), and a regular expression searches a block of papers at a
time before it searches one value at a time.
"""

from __future__ import annotations

import bisect
import math
import time
import unicodedata
from array import array
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from digest.matching.syntax import FIELDS, CompiledRegex, Word, compile_regex
from digest.matching.word_batch import cut_many
from digest.models import Highlight, Item
from digest.text import cut_words, fold_all

SEPARATOR = "\n"  # between the values of a multi-valued field in its text
UTF8_SEPARATOR = SEPARATOR.encode("utf-8")
FIELD_ORDER = {name: k for k, name in enumerate(FIELDS)}  # the order spans are listed in

Hits = dict[int, list[Highlight]]
Docs = tuple[set[int], set[int]]  # the docs found, and those of them found in the title


# Highlights kept per item, field and part of a rule: a paper shows a shortened abstract and a few
# snippets, so the first few places a word stands are all a reader sees; a rule such as /./ would
# otherwise build a highlight for every character of every paper.
MAX_SPANS = 4
COMBINATIONS = 8  # a phrase searched for as this many joined-term strings at most, else token by token
MANY_DOCS = 512  # a phrase in more candidate papers than this is found in all at once (Positions)
REGEX_BLOCK = 64  # papers searched at once by a regular expression before one by one
FEW_DOCS = 16  # papers searched as they are, not through postings (FieldIndex.candidates)
MANY_TERMS = 8  # a word of more terms than this is found by a walk over the tokens, not a search per term


class OverBudget(Exception):
    """An evaluation under a :class:`Budget` reached its deadline; nothing partial was kept."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Bounds for one evaluation: a ``time.monotonic()`` deadline, and at most ``spans`` highlights
    per item and field (which items match never depends on it; the first spans are kept, so the
    first match of a field and whether a title matched stay as they are)."""

    deadline: float = math.inf
    spans: int = MAX_SPANS

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise OverBudget()


UNBOUNDED = Budget()


def matches(compiled: CompiledRegex, text: str | bytes) -> Iterator[tuple[int, int]]:
    """The non-empty matches ``compiled.finditer(text)`` finds, as (start, end) offsets."""
    for found in compiled.finditer(text):
        if found.end() > found.start():
            yield found.start(), found.end()


def _utf8_block(docs: Iterable[tuple[int, FieldTokens]]) -> bytes:
    """The values of a block of papers in UTF-8, joined by the line break no word touches."""
    return UTF8_SEPARATOR.join(value for _, tokens in docs for value in tokens.utf8_values())


def has_match(compiled: CompiledRegex, text: str | bytes) -> bool:
    """Whether ``compiled`` finds a non-empty match in ``text``. One search answers unless the
    pattern matched empty text first (``/x*/``): then its matches are walked for a longer one."""
    found = compiled.search(text)
    if found is None:
        return False
    return found.end() > found.start() or next(matches(compiled, text), None) is not None


@dataclass(frozen=True, slots=True)
class Terms:
    """The terms a word of a rule stands for in one field: ``whole`` matches every token of those
    terms; a token of a ``partial`` term only when its surface (NFKC, case kept) is one of those
    listed (``=SAM`` matches "SAM" but not "Sam", whose term is the same)."""

    whole: frozenset[str]
    partial: dict[str, frozenset[str]]

    def all(self) -> tuple[str, ...]:
        return (*self.whole, *self.partial)


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
    """One field of one item: its text, where each value starts and ends, and its terms (normalised
    words) with their offsets.

    ``bounds`` holds running offsets: term k starts at ``bounds[2k]`` and ends at ``bounds[2k + 1]``.
    """

    text: str
    segments: list[tuple[int, int]]
    terms: list[str]  # "" marks the boundary between two values: it never equals a rule word
    bounds: array[int]
    _joined: str = ""  # " t1 t2 … " on first use, for phrase searches
    _utf8: tuple[bytes, ...] = ()  # each value's text in UTF-8 on first use, for regex searches

    def start(self, position: int) -> int:
        return self.bounds[2 * position]

    def end(self, position: int) -> int:
        return self.bounds[2 * position + 1]

    def utf8_values(self) -> tuple[bytes, ...]:
        """Each value's text as UTF-8, kept: RE2 reads UTF-8, and handing it bytes spares the
        encoding of every text on every search (three to four times the search itself)."""
        if not self._utf8 and self.text:
            segments = self.segments
            if len(segments) == 1:
                self._utf8 = (self.text.encode("utf-8"),)
            else:
                self._utf8 = tuple(self.text[start:end].encode("utf-8") for start, end in segments)
        return self._utf8

    def surface(self, position: int) -> str:
        return self.text[self.start(position) : self.end(position)]

    def fits(self, position: int, terms: Terms) -> bool:
        """Whether the token at ``position`` is one that ``terms`` stands for."""
        term = self.terms[position]
        if term in terms.whole:
            return True
        surfaces = terms.partial.get(term)
        return surfaces is not None and unicodedata.normalize("NFKC", self.surface(position)) in surfaces

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

    def phrase_at(self, wanted: Sequence[Terms], limit: int, needles: Sequence[str] | None = None) -> list[int]:
        """Up to ``limit`` positions, in order, where the words ``wanted`` stand one after another.

        Where every word stands for whole terms (nearly always), one substring search (in C) per
        combination of their terms (:func:`phrase_needles`, which a caller searching many papers
        passes in); otherwise each place the first word stands is checked.
        """
        if needles is None:
            needles = phrase_needles(wanted)
        if needles is not None:
            found: list[int] = []
            joined = self.joined()
            for needle in needles:
                at = joined.find(needle)
                kept = position = counted = 0
                while at >= 0 and kept < limit:
                    position += joined.count(" ", counted, at)  # counted on from the last one, not from 0
                    counted = at
                    found.append(position)
                    kept += 1
                    at = joined.find(needle, at + 1)
            if len(needles) > 1:
                found.sort()
            return found[:limit]
        last = len(wanted) - 1
        first = wanted[0]
        if len(first.whole) + len(first.partial) > 1:  # a prefix: one pass over the tokens (in C)
            starts = [k for k, term in enumerate(self.terms) if term in first.whole or term in first.partial]
        else:
            starts = list(self.positions(first.all()[0]))
        out = []
        for position in starts:
            if position + last < len(self.terms) and all(
                self.fits(position + k, terms) for k, terms in enumerate(wanted)
            ):
                out.append(position)
                if len(out) >= limit:
                    break
        return out


def word_positions(tokens: FieldTokens, whole: frozenset[str], needles: Sequence[str], cap: int) -> list[int]:
    """Up to ``cap`` positions of one word (any of its terms ``whole``) in a paper's tokens, in order.

    A prefix of many terms (th* → the, that, this, …) is found by one walk over the tokens that
    stops at the cap; a word of a few terms by a substring search per term (in C).
    """
    if len(needles) > MANY_TERMS:
        positions: list[int] = []
        for position, term in enumerate(tokens.terms):
            if term in whole:
                positions.append(position)
                if len(positions) >= cap:
                    break
        return positions
    return tokens.phrase_at([Terms(whole, {})], cap, needles)


def phrase_needles(wanted: Sequence[Terms]) -> list[str] | None:
    """What a phrase is searched for in a paper's joined terms: " t1 t2 " for each combination of
    its words' terms (a value boundary joins as a double space, which no phrase spans), or None
    where it is checked token by token (an exact word, or more than :data:`COMBINATIONS`)."""
    if any(terms.partial for terms in wanted) or math.prod(len(terms.whole) for terms in wanted) > COMBINATIONS:
        return None
    return [f" {' '.join(combination)} " for combination in product(*(sorted(terms.whole) for terms in wanted))]


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


class Positions:
    """Every token of one field of every item, as one array of term numbers (built once per cycle,
    when a proximity or a costly phrase is first decided): where a phrase stands is then found
    in all papers at once in numpy, not paper by paper in Python.

    Papers follow each other with a boundary token between them, as the values of a field are
    kept apart (the "" term): two tokens are in one value when ``segment`` says so.
    """

    __slots__ = ("ids", "number", "segment", "starts")

    def __init__(self, column: FieldIndex) -> None:
        self.number = {term: k for k, term in enumerate(column.postings)}
        boundary = self.number[""] = len(self.number)
        terms: list[str] = []
        starts = [0]
        for tokens in column.tokens:
            if tokens is not None:
                terms.extend(tokens.terms)
            terms.append("")
            starts.append(len(terms))
        self.ids = np.fromiter(map(self.number.__getitem__, terms), dtype=np.int32, count=len(terms))
        self.starts = np.array(starts, dtype=np.int64)
        self.segment = np.cumsum(self.ids == boundary, dtype=np.int32)

    def table(self, terms: Terms) -> np.ndarray:
        """Term number → whether it is one of ``terms`` (whole terms only)."""
        table = np.zeros(len(self.number), dtype=bool)
        table[[self.number[term] for term in terms.whole if term in self.number]] = True
        return table

    def phrase(self, wanted: Sequence[Terms]) -> np.ndarray:
        """Where the words ``wanted`` stand one after another (token numbers, in order)."""
        found = np.flatnonzero(self.table(wanted[0])[self.ids])
        for k, terms in enumerate(wanted[1:], start=1):
            found = found[found + k < len(self.ids)]
            found = found[self.table(terms)[self.ids[found + k]]]
        return found

    def docs(self, places: np.ndarray) -> set[int]:
        """The papers that token numbers ``places`` fall in."""
        return set(np.unique(np.searchsorted(self.starts, places, side="right") - 1).tolist())

    def near(self, left: Sequence[Terms], right: Sequence[Terms], distance: int) -> set[int]:
        """The papers where the phrases stand within ``distance`` words of each other, in either
        order, in one value: for each place of the left one, the nearest right one after it and
        before it (a search in sorted arrays), which is the nearest a pair can be."""
        lefts, rights = self.phrase(left), self.phrase(right)
        if not len(lefts) or not len(rights):
            return set()
        found = []
        for after in (True, False):
            if after:  # left, then right: the first right one at or past the left one's end
                k = np.searchsorted(rights, lefts + len(left))
                keep = k < len(rights)
            else:  # right, then left: the last right one that ends at or before the left one
                k = np.searchsorted(rights, lefts - len(right), side="right") - 1
                keep = k >= 0
            a, b = lefts[keep], rights[k[keep]]
            gap = b - (a + len(left)) if after else a - (b + len(right))
            found.append(a[(gap <= distance) & (self.segment[a] == self.segment[b])])
        return self.docs(np.concatenate(found))


@dataclass(slots=True)
class FieldIndex:
    """One field of every item: the tokens (None where an item has no value) and term → docs."""

    tokens: list[FieldTokens | None]
    postings: dict[str, array[int]]
    _vocabulary: list[str] = field(default_factory=list)  # sorted terms, on the first prefix
    _terms: dict[Word, Terms] = field(default_factory=dict)
    _positions: Positions | None = None

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
        """The terms ``word`` stands for here: those of its forms the field holds (``patch`` →
        patch, patches); for a prefix, the terms that begin so, found by bisecting the sorted
        vocabulary (cost: the terms covered, never the tokens); for an exact word, its term, with
        the spelling it must have."""
        found = self._terms.get(word)
        if found is not None:
            return found
        if word.exact:
            found = Terms(frozenset(), {word.term: frozenset((unicodedata.normalize("NFKC", word.surface),))})
        elif word.prefix:
            if not self._vocabulary:
                self._vocabulary = sorted(self.postings)
            vocabulary, prefix = self._vocabulary, word.term
            covered = set()
            for k in range(bisect.bisect_left(vocabulary, prefix), len(vocabulary)):
                if not vocabulary[k].startswith(prefix):
                    break
                covered.add(vocabulary[k])
            found = Terms(frozenset(covered), {})
        else:
            held = [form for form in word.forms if form in self.postings]  # not forms ∩ dict: that walks the dict
            found = Terms(frozenset(held or (word.term,)), {})
        self._terms[word] = found
        return found

    def docs(self, terms: Terms) -> set[int]:
        """The docs that hold any of ``terms`` (by postings)."""
        parts = terms.all()
        if len(parts) == 1:
            return set(self.postings.get(parts[0], ()))
        found: set[int] = set()
        for term in parts:
            found.update(self.postings.get(term, ()))
        return found

    def positions(self) -> Positions:
        if self._positions is None:
            self._positions = Positions(self)
        return self._positions

    def candidates(self, terms: Terms, docs: Collection[int] | None) -> set[int]:
        """The docs to search for ``terms`` in: those that hold them, within ``docs``. A few
        ``docs`` (the papers a digest shows) are searched as they are: the postings of a common
        word list nearly every paper, and a set of them would cost more than the search."""
        if docs is not None and len(docs) <= FEW_DOCS:
            return {doc for doc in docs if self.tokens[doc] is not None}
        found = self.docs(terms)
        if docs is not None:
            found.intersection_update(docs)
        return found

    def joined(self, doc: int) -> str:
        tokens = self.tokens[doc]
        return tokens.joined() if tokens is not None else ""


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

    # -- highlights, for the docs already decided ---------------------------------------------
    def phrase(
        self,
        words: Sequence[Word],
        fields: Iterable[str],
        budget: Budget = UNBOUNDED,
        docs: Collection[int] | None = None,
    ) -> Hits:
        """Docs where ``words`` stand one after another in one of ``fields``, with their spans,
        at most ``budget.spans`` per doc and field (docs in order; within a doc, fields in
        :data:`FIELDS` order, then positions). ``docs`` limits the search to those docs.
        """
        found: Hits = {}
        names = sorted(fields, key=FIELD_ORDER.__getitem__)
        last = len(words) - 1
        cap = budget.spans
        for name in names:
            budget.check()
            column = self.field(name)
            wanted = [column.terms(word) for word in words]
            candidates = column.candidates(wanted[0], docs)
            if len(wanted) == 1 and not wanted[0].partial:
                # One word (most rules; its forms, such as patch and patches, are its terms):
                # inline, a substring search per term, not a call per candidate.
                whole = wanted[0].whole
                needles = [f" {term} " for term in sorted(whole)]
                for doc in sorted(candidates):
                    tokens = column.tokens[doc]
                    assert tokens is not None
                    bounds = tokens.bounds
                    found.setdefault(doc, []).extend(
                        Highlight(name, bounds[2 * position], bounds[2 * position + 1])
                        for position in word_positions(tokens, whole, needles, cap)
                    )
                continue
            searched = phrase_needles(wanted)
            for doc in sorted(candidates):
                tokens = column.tokens[doc]
                assert tokens is not None
                for position in tokens.phrase_at(wanted, cap, searched):
                    found.setdefault(doc, []).append(
                        Highlight(name, tokens.start(position), tokens.end(position + last))
                    )
        found = {doc: spans for doc, spans in found.items() if spans}
        return dict(sorted(found.items())) if len(names) > 1 else found

    def near(
        self,
        pair: tuple[Sequence[Word], Sequence[Word]],
        distance: int,
        fields: Iterable[str],
        budget: Budget = UNBOUNDED,
        docs: Collection[int] | None = None,
        spans: bool = True,
    ) -> Hits:
        """Docs where the two phrases of ``pair`` stand within ``distance`` words of each other (in
        either order, in one value of a field), with the spans of both (capped as :meth:`phrase`)."""
        found: Hits = {}
        names = sorted(fields, key=FIELD_ORDER.__getitem__)
        cap = budget.spans
        for name in names:
            budget.check()
            column = self.field(name)
            left = [column.terms(word) for word in pair[0]]
            right = [column.terms(word) for word in pair[1]]
            candidates = column.candidates(left[0], docs) & column.candidates(right[0], docs)
            left_needles, right_needles = phrase_needles(left), phrase_needles(right)
            for doc in sorted(candidates):
                budget.check()
                tokens = column.tokens[doc]
                assert tokens is not None
                lefts = tokens.phrase_at(left, len(tokens.terms), left_needles)
                rights = tokens.phrase_at(right, len(tokens.terms), right_needles) if lefts else []
                places = _near(tokens, lefts, len(left), rights, len(right), distance, first_only=not spans)
                if not places:
                    continue
                kept = found.setdefault(doc, [])
                if not spans:
                    continue
                for start, length in places[: 2 * cap]:
                    kept.append(Highlight(name, tokens.start(start), tokens.end(start + length - 1)))
        return dict(sorted(found.items())) if len(names) > 1 else found

    def regex(
        self,
        pattern: str,
        ignore_case: bool,
        fields: Iterable[str],
        budget: Budget = UNBOUNDED,
        docs: Collection[int] | None = None,
    ) -> Hits:
        """Docs where the RE2 ``pattern`` finds a non-empty match within one value of ``fields``,
        with at most ``budget.spans`` spans per doc and field; ``docs`` limits the search."""
        compiled = compile_regex(pattern, ignore_case)
        columns = [(name, self.field(name).tokens) for name in sorted(fields, key=FIELD_ORDER.__getitem__)]
        found: Hits = {}
        cap = budget.spans
        for doc in sorted(docs) if docs is not None else range(len(self.items)):
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

    # -- decisions: which docs, no highlights -------------------------------------------------
    def phrase_docs(self, words: Sequence[Word], fields: Iterable[str], budget: Budget = UNBOUNDED) -> Docs:
        """The docs :meth:`phrase` finds, and those it finds in the title, from postings: a doc
        must hold every word (a set intersection), and only then is the order checked in it."""
        found: set[int] = set()
        in_title: set[int] = set()
        for name in sorted(fields, key=FIELD_ORDER.__getitem__):
            budget.check()
            column = self.field(name)
            docs = self._phrase_docs(column, [column.terms(word) for word in words], budget)
            found |= docs
            if name == "title":
                in_title |= docs
        return found, in_title

    @staticmethod
    def _phrase_docs(column: FieldIndex, wanted: list[Terms], budget: Budget) -> set[int]:
        """The docs of one field where ``wanted`` stand one after another: a doc must hold every
        word (postings), and only then is the order checked in it, or in all papers at once
        (:class:`Positions`) when many papers or a long phrase of prefixes would be checked."""
        partial = any(terms.partial for terms in wanted)
        if len(wanted) == 1 and not partial:
            return column.docs(wanted[0])
        if not partial and (len(wanted) > COMBINATIONS or any(len(terms.whole) > MANY_TERMS for terms in wanted)):
            return column.positions().docs(column.positions().phrase(wanted))
        distinct = {id(terms): terms for terms in wanted}.values()  # "of the of the …" looks each up once
        holding = sorted((column.docs(terms) for terms in distinct), key=len)
        candidates = holding[0].intersection(*holding[1:])
        if not partial and len(candidates) > MANY_DOCS:
            return column.positions().docs(column.positions().phrase(wanted))
        docs = set()
        needles = phrase_needles(wanted)
        for number, doc in enumerate(candidates):
            if number % 256 == 255:
                budget.check()
            tokens = column.tokens[doc]
            assert tokens is not None
            if tokens.phrase_at(wanted, 1, needles):
                docs.add(doc)
        return docs

    def near_docs(
        self, pair: tuple[Sequence[Word], Sequence[Word]], distance: int, fields: Iterable[str], budget: Budget
    ) -> Docs:
        """The docs :meth:`near` finds, and those it finds in the title: in all papers at once
        (:meth:`Positions.near`), or paper by paper where a word is exact (``=SAM``)."""
        found: set[int] = set()
        in_title: set[int] = set()
        for name in sorted(fields, key=FIELD_ORDER.__getitem__):
            budget.check()
            column = self.field(name)
            left = [column.terms(word) for word in pair[0]]
            right = [column.terms(word) for word in pair[1]]
            if any(terms.partial for terms in (*left, *right)):
                docs = set(self.near(pair, distance, (name,), budget, spans=False))
            else:
                docs = column.positions().near(left, right, distance)
            found |= docs
            if name == "title":
                in_title |= docs
        return found, in_title

    def regex_docs(self, pattern: str, ignore_case: bool, fields: Iterable[str], budget: Budget = UNBOUNDED) -> Docs:
        """The docs :meth:`regex` finds, and those it finds in the title: one search per value,
        after one search of a block of papers at a time has found something in the block.

        A match in one value is a match in the block (values joined by a line break, which no
        word touches) at the same place, so a block without one holds no matching paper; a pattern
        that could be anchored (``^``, ``$``, ``\\A``, ``\\z``) is searched value by value."""
        compiled = compile_regex(pattern.encode("utf-8"), ignore_case)  # same matches, over UTF-8
        blocks = not any(anchor in pattern for anchor in ("^", "$", "\\A", "\\z"))
        found: set[int] = set()
        in_title: set[int] = set()
        for name in sorted(fields, key=FIELD_ORDER.__getitem__):
            column = self.field(name).tokens
            for first in range(0, len(column), REGEX_BLOCK):
                budget.check()
                todo = [
                    (doc, tokens)
                    for doc, tokens in enumerate(column[first : first + REGEX_BLOCK], start=first)
                    if tokens is not None and (name == "title" or doc not in found)
                ]
                if not todo or (blocks and compiled.search(_utf8_block(todo)) is None):
                    continue
                for doc, tokens in todo:
                    if any(has_match(compiled, value) for value in tokens.utf8_values()):
                        found.add(doc)
                        if name == "title":
                            in_title.add(doc)
        return found, in_title

    def where(self, admits: Callable[[Item], bool]) -> Hits:
        """Docs whose item passes a test that needs no text (``upvotes>=20``, ``has:code``)."""
        return {doc: [] for doc, item in enumerate(self.items) if admits(item)}


def _near(
    tokens: FieldTokens,
    lefts: list[int],
    left_len: int,
    rights: list[int],
    right_len: int,
    distance: int,
    first_only: bool = False,
) -> list[tuple[int, int]]:
    """(start, length) of each occurrence of either phrase that has one of the other within
    ``distance`` words (words strictly between them), in the same value (no "" between them).

    Both lists are in order: for each left one, only the right ones in its window are looked at
    (bisection), so two common words cost their occurrences, not their product. ``first_only``
    returns at the first pair (deciding needs no more)."""
    places: set[tuple[int, int]] = set()
    boundaries = [k for k, term in enumerate(tokens.terms) if term == ""] if "" in tokens.terms else []
    for a in lefts:
        low = bisect.bisect_left(rights, a - distance - right_len)
        high = bisect.bisect_right(rights, a + left_len + distance)
        for b in rights[low:high]:
            first, first_len, second = (a, left_len, b) if a <= b else (b, right_len, a)
            gap = second - (first + first_len)
            if not 0 <= gap <= distance:
                continue
            if boundaries and bisect.bisect_left(boundaries, first) != bisect.bisect_left(boundaries, second):
                continue  # a value boundary between them: two authors, say
            places.add((a, left_len))
            places.add((b, right_len))
            if first_only:
                return sorted(places)
    return sorted(places)
