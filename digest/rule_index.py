"""An index of one cycle's items, built once, that the rule evaluator asks instead of scanning text.

A field (title, abstract, author, …) is tokenized for every item the first time a rule asks
for it (most rules search only titles and abstracts): terms plus character offsets, and for every
term the items whose field holds it (postings). Titles, abstracts and other fields of one value are
cut for all items in one batch (:mod:`digest.word_batch`). A phrase then costs the items holding its first
word, not a scan of every item; a prefix (``diffus*``) looks up the sorted vocabulary; a regular
expression runs RE2 over the field texts. Multi-valued fields (authors, keywords, categories) keep
their values apart, so a phrase never runs from one author's name into the next.
"""

from __future__ import annotations

import bisect
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from digest.models import Highlight, Item
from digest.rule_syntax import FIELDS, Word, compile_regex
from digest.text import cut_words, fold_all
from digest.word_batch import cut_many

SEPARATOR = "\n"  # between the values of a multi-valued field in its text
FIELD_ORDER = {name: k for k, name in enumerate(FIELDS)}  # the order spans are listed in

Hits = dict[int, list[Highlight]]


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

    def fits(self, position: int, word: Word) -> bool:
        if word.prefix:
            return self.surface(position).casefold().startswith(word.term)
        return self.terms[position] == word.term

    def phrase_starts(self, words: Sequence[Word]) -> Iterator[int]:
        """Where ``words`` stand one after another, checked token by token: the way for a phrase
        with a prefix word, which needs each token's surface (see :meth:`ItemIndex.phrase`)."""
        for position in range(len(self.terms) - len(words) + 1):
            if all(self.fits(position + k, word) for k, word in enumerate(words)):
                yield position

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

    def candidates(self, word: Word) -> Iterable[int]:
        """Docs that may hold ``word``: its term's postings, or for a prefix those of every term
        that a word starting with it can fold to.

        A prefix compares with a word's case-folded surface, and folding a plural changes at most
        its last three letters (ies → y, sses → ss, s → ""): so a surface that starts with ``p``
        folds to a term that starts with ``p`` too, or to ``p`` less its last letter or two, with
        or without y. Those few extra terms make a superset that ``fits`` then checks exactly.
        """
        if not word.prefix:
            return self.postings.get(word.term, ())
        if not self._vocabulary:
            self._vocabulary = sorted(self.postings)
        prefix, vocabulary = word.term, self._vocabulary
        terms = {prefix[:-cut] + end for cut in (1, 2, 3) for end in ("", "y") if cut < len(prefix)}
        for k in range(bisect.bisect_left(vocabulary, prefix), len(vocabulary)):
            if not vocabulary[k].startswith(prefix):
                break
            terms.add(vocabulary[k])
        return sorted({doc for term in terms for doc in self.postings.get(term, ())})


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
    def phrase(self, words: Sequence[Word], fields: Iterable[str]) -> Hits:
        """Docs where ``words`` stand one after another in one of ``fields``, with their spans
        (docs in order; within a doc, fields in :data:`FIELDS` order, then positions).

        Whole words are found by one substring search (in C) for " t1 t2 " in a field's terms
        joined by spaces; the number of spaces before a find is its token position. A value
        boundary ("") joins as a double space, which no phrase spans. A prefix word needs each
        token's surface, so such a phrase is checked token by token.
        """
        needle = None if any(word.prefix for word in words) else f" {' '.join(word.term for word in words)} "
        found: Hits = {}
        names = sorted(fields, key=FIELD_ORDER.__getitem__)
        last = len(words) - 1
        for name in names:
            column = self.field(name)
            for doc in column.candidates(words[0]):
                tokens = column.tokens[doc]
                assert tokens is not None
                if needle is None:
                    for position in tokens.phrase_starts(words):
                        span = Highlight(name, tokens.start(position), tokens.end(position + last))
                        found.setdefault(doc, []).append(span)
                    continue
                # Inline, not a generator per candidate (that cost a fifth of all matching).
                joined, bounds = tokens.joined(), tokens.bounds
                at = joined.find(needle)
                while at >= 0:
                    position = joined.count(" ", 0, at)
                    span = Highlight(name, bounds[2 * position], bounds[2 * (position + last) + 1])
                    found.setdefault(doc, []).append(span)
                    at = joined.find(needle, at + 1)
        return dict(sorted(found.items())) if len(names) > 1 else found

    def regex(self, pattern: str, ignore_case: bool, fields: Iterable[str]) -> Hits:
        """Docs where the RE2 ``pattern`` finds a non-empty match within one value of ``fields``."""
        compiled = compile_regex(pattern, ignore_case)
        columns = [(name, self.field(name).tokens) for name in sorted(fields, key=FIELD_ORDER.__getitem__)]
        found: Hits = {}
        for doc in range(len(self.items)):
            for name, column in columns:
                tokens = column[doc]
                if tokens is None:
                    continue
                for start, end in tokens.segments:
                    for match in compiled.finditer(tokens.text[start:end]):
                        if match.end() > match.start():
                            span = Highlight(name, start + match.start(), start + match.end())
                            found.setdefault(doc, []).append(span)
        return found

    def where(self, admits: Callable[[Item], bool]) -> Hits:
        """Docs whose item passes a test that needs no text (``upvotes>=20``, ``has:code``)."""
        return {doc: [] for doc, item in enumerate(self.items) if admits(item)}
