"""Hypothesis: the index finds exactly the phrases, and the spans, that reading every token would.

The index takes shortcuts for speed (an ASCII tokenizer for ASCII text, offsets from running sums,
postings per field, a substring search over joined terms, a superset of terms for a prefix); the
reference here takes none: :func:`digest.text.tokenize` on each value, and a comparison at every
position.
"""

from __future__ import annotations

import unicodedata
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.matching.index import Budget, ItemIndex, field_values
from digest.matching.syntax import FIELDS, Word
from digest.models import Highlight, Item
from digest.text import forms, normal, tokenize

WORDS = [
    "video", "Video", "VIDEOS", "diffusion", "Diffusions", "study", "studies", "Studies", "class", "classes",
    "analysis", "gpu", "GPUs", "RTX4090", "4090", "4090D", "rtx", "Straße", "STRASSE", "İstanbul", "istanbul",
    "naïve", "ﬁne", "fine", "x", "a1b2", "3d", "3D", "studi", "studie", "clas", "classe",
    "patch", "Patches", "box", "boxes", "news", "new", "thus", "THU", "bus", "buses", "movie", "movies",
    "CO₂", "x²", "４０９０", "cafe\u0301", "café", "视频扩散模型", "视频", "हिन्दी", "SAM", "Sam",
]  # fmt: skip
GAPS = [" ", "  ", "-", ", ", ". ", "\n", "(", ") ", "'", "_", "–", "/", ""]

text = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(GAPS)), max_size=14).map(
    lambda parts: "".join(w + g for w, g in parts)
)
values = st.lists(text, max_size=3).map(tuple)
items = st.lists(st.tuples(text, text, values, values), min_size=1, max_size=5).map(
    lambda rows: [
        Item(f"i{n}", "test", title, abstract, "https://e/x", date(2026, 1, 1), authors=authors, ai_keywords=keywords)
        for n, (title, abstract, authors, keywords) in enumerate(rows)
    ]
)
PREFIXES = ["vid", "studi", "studie", "studies", "clas", "classe", "classes", "strass", "stra", "ista", "40", "4090d"]
RULE_WORDS = [t.surface for w in WORDS for t in (Word(w[s.start : s.end]) for s in tokenize(w))]
word = st.one_of(
    st.sampled_from(RULE_WORDS).map(lambda w: Word(w)),
    st.sampled_from(RULE_WORDS).map(lambda w: Word(w, exact=True)),
    st.sampled_from(PREFIXES).map(lambda p: Word(p, prefix=True)),
)


def stands_for(token_text: str, word: Word) -> bool:
    """The semantics as the README tells them, token by token."""
    if word.prefix:
        return normal(token_text).startswith(normal(word.surface))
    if word.exact:
        return unicodedata.normalize("NFKC", token_text) == unicodedata.normalize("NFKC", word.surface)
    return normal(token_text) in forms(word.surface)


phrases = st.lists(word, min_size=1, max_size=3)
field_sets = st.lists(st.sampled_from(["title", "abstract", "author", "keyword"]), min_size=1, max_size=4, unique=True)


def reference(items: list[Item], words: list[Word], fields: list[str]) -> set[tuple[int, Highlight]]:
    """Every place the words stand one after another within one value, by reading every token."""
    found = set()
    for doc, item in enumerate(items):
        for field in fields:
            offset = 0
            for value in field_values(item, field):
                tokens = tokenize(value)
                for k in range(len(tokens) - len(words) + 1):
                    window = tokens[k : k + len(words)]
                    if all(stands_for(value[t.start : t.end], w) for t, w in zip(window, words, strict=True)):
                        found.add((doc, Highlight(field, offset + window[0].start, offset + window[-1].end)))
                offset += len(value) + 1
    return found


@settings(max_examples=300, deadline=None)
@given(items, phrases, field_sets)
def test_index_finds_what_reading_every_token_finds(items: list[Item], words: list[Word], fields: list[str]) -> None:
    hits = ItemIndex(items).phrase(words, fields, Budget(spans=10**6))
    found = {(doc, span) for doc, spans in hits.items() for span in spans}
    assert found == reference(items, words, fields)
    assert list(hits) == sorted(hits), "docs come in order"
    order = {name: k for k, name in enumerate(FIELDS)}
    for spans in hits.values():
        keys = [(order[s.field], s.start) for s in spans]
        assert keys == sorted(keys), "within a doc: fields in order, then positions"


@settings(max_examples=200, deadline=None)
@given(items, phrases, field_sets)
def test_highlights_are_capped_but_the_decision_is_not(items: list[Item], words: list[Word], fields: list[str]) -> None:
    index = ItemIndex(items)
    capped = index.phrase(words, fields, Budget(spans=2))
    full = index.phrase(words, fields, Budget(spans=10**6))
    assert capped.keys() == full.keys() == index.phrase_docs(words, fields)[0]
    for doc, spans in capped.items():
        for field in fields:
            mine = [s for s in spans if s.field == field]
            assert len(mine) <= 2 and mine == [s for s in full[doc] if s.field == field][:2]
