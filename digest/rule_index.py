"""An index of one cycle's items, built once, that the rule evaluator asks instead of scanning text.

Each searchable field of each item is tokenized once (terms plus character offsets, kept in
arrays), and every term points at its occurrences (postings, packed into one integer each: doc,
field, position). A phrase then costs the postings of its first word, not a scan of every item;
a prefix (``diffus*``) looks up the sorted vocabulary; a regular expression runs RE2 over the
field texts. Multi-valued fields (authors, keywords, categories) keep their values apart, so a
phrase never runs from one author's name into the next.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from digest.models import Highlight, Item
from digest.rule_syntax import FIELDS, Word, compile_regex
from digest.text import words as text_words

SEPARATOR = "\n"  # between the values of a multi-valued field in its text
_FIELD_ID = {name: k for k, name in enumerate(FIELDS)}
_POSITION_BITS = 22  # positions past ~4 million tokens in one field are not indexed
_FIELD_BITS = 3
assert len(FIELDS) <= 1 << _FIELD_BITS

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
    """One field of one item: its text, value boundaries, and terms with their offsets."""

    text: str
    segments: list[tuple[int, int]]
    terms: list[str]  # "" marks the boundary between two values: it never equals a rule word
    starts: array[int]
    ends: array[int]

    def surface(self, position: int) -> str:
        return self.text[self.starts[position] : self.ends[position]]

    def fits(self, position: int, word: Word) -> bool:
        if word.prefix:
            return self.surface(position).casefold().startswith(word.term)
        return self.terms[position] == word.term


def _field_tokens(values: Sequence[str], surfaces: dict[str, str]) -> FieldTokens:
    """Tokenize a field's values; note each word as written (→ its term) in ``surfaces``."""
    fields = FieldTokens(SEPARATOR.join(values), [], [], array("l"), array("l"))
    offset = 0
    for number, value in enumerate(values):
        if number:
            fields.terms.append("")
            fields.starts.append(offset - 1)
            fields.ends.append(offset - 1)
        fields.segments.append((offset, offset + len(value)))
        for word, term, start, end in text_words(value):
            fields.terms.append(term)
            fields.starts.append(offset + start)
            fields.ends.append(offset + end)
            if word not in surfaces:
                surfaces[word] = term
        offset += len(value) + len(SEPARATOR)
    return fields


def _pack(doc: int, field_id: int, position: int) -> int:
    return (((doc << _FIELD_BITS) | field_id) << _POSITION_BITS) | position


def _unpack(code: int) -> tuple[int, int, int]:
    position = code & ((1 << _POSITION_BITS) - 1)
    rest = code >> _POSITION_BITS
    return rest >> _FIELD_BITS, rest & ((1 << _FIELD_BITS) - 1), position


class ItemIndex:
    """Tokens with positions for every searchable field of each item, and term → postings."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self.fields: list[list[FieldTokens | None]] = []
        self.postings: dict[str, array[int]] = {}
        self._surfaces: dict[str, str] = {}  # word as written → its folded term
        self._prefixes: tuple[list[str], list[str]] | None = None  # sorted case-folded words, their terms
        for doc, item in enumerate(self.items):
            row: list[FieldTokens | None] = []
            for field_id, name in enumerate(FIELDS):
                values = field_values(item, name)
                if not values:
                    row.append(None)
                    continue
                tokens = _field_tokens(values, self._surfaces)
                row.append(tokens)
                self._post(doc, field_id, tokens)
            self.fields.append(row)

    def _post(self, doc: int, field_id: int, tokens: FieldTokens) -> None:
        base = _pack(doc, field_id, 0)
        postings = self.postings
        for position, term in enumerate(tokens.terms[: 1 << _POSITION_BITS]):
            if term:
                found = postings.get(term)
                if found is None:
                    found = postings[term] = array("q")
                found.append(base | position)

    def __len__(self) -> int:
        return len(self.items)

    # -- lookups ------------------------------------------------------------------------------
    def _candidates(self, word: Word) -> Iterable[int]:
        """Postings that may hold ``word``: its term's, or those of every term a prefix may start."""
        if not word.prefix:
            return self.postings.get(word.term, ())
        if self._prefixes is None:
            pairs = sorted({(surface.casefold(), term) for surface, term in self._surfaces.items()})
            self._prefixes = ([surface for surface, _ in pairs], [term for _, term in pairs])
        surfaces, surface_terms = self._prefixes
        terms: dict[str, None] = {}
        for k in range(bisect.bisect_left(surfaces, word.term), len(surfaces)):
            if not surfaces[k].startswith(word.term):
                break
            terms[surface_terms[k]] = None
        return sorted(code for term in terms for code in self.postings[term])

    def phrase(self, words: Sequence[Word], fields: Iterable[str]) -> Hits:
        """Docs where ``words`` stand one after another in one of ``fields``, with their spans."""
        wanted = {_FIELD_ID[name] for name in fields}
        found: Hits = {}
        first, rest = words[0], words[1:]
        for code in self._candidates(first):
            doc, field_id, position = _unpack(code)
            if field_id not in wanted:
                continue
            tokens = self.fields[doc][field_id]
            assert tokens is not None
            end = position + len(rest)
            if end >= len(tokens.terms) or not tokens.fits(position, first):
                continue
            if all(tokens.fits(position + 1 + k, word) for k, word in enumerate(rest)):
                span = Highlight(FIELDS[field_id], tokens.starts[position], tokens.ends[end])
                found.setdefault(doc, []).append(span)
        return found

    def regex(self, pattern: str, ignore_case: bool, fields: Iterable[str]) -> Hits:
        """Docs where the RE2 ``pattern`` finds a non-empty match within one value of ``fields``."""
        compiled = compile_regex(pattern, ignore_case)
        wanted = [_FIELD_ID[name] for name in fields]
        found: Hits = {}
        for doc, row in enumerate(self.fields):
            for field_id in wanted:
                tokens = row[field_id]
                if tokens is None:
                    continue
                for start, end in tokens.segments:
                    for match in compiled.finditer(tokens.text[start:end]):
                        if match.end() > match.start():
                            span = Highlight(FIELDS[field_id], start + match.start(), start + match.end())
                            found.setdefault(doc, []).append(span)
        return found

    def where(self, admits: Callable[[Item], bool]) -> Hits:
        """Docs whose item passes a test that needs no text (``upvotes>=20``, ``has:code``)."""
        return {doc: [] for doc, item in enumerate(self.items) if admits(item)}
