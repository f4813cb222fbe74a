"""Tokens as the rule language sees text: the base semantics of SPEC.md in one place.

Text is cut at every character that is not a letter or digit, and again where letters meet digits
(``RTX4090`` → ``rtx 4090``). Each token is case-folded (Unicode) and simple plurals are folded
(``GPUs`` → ``gpu``). Rules and items go through the same :func:`fold`, so both sides always agree
even where the plural rule is linguistically naive (``series`` → ``sery`` on both sides).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

# A run of digits, or a run of letters (letters = word characters that are neither digits nor '_').
_TOKEN = re.compile(r"\d+|[^\W\d_]+")
# The same tokens as capturing splits; for ASCII text \d is [0-9] and [^\W\d_] is [A-Za-z].
_TOKEN_SPLIT = re.compile(r"(\d+|[^\W\d_]+)")
_ASCII_TOKEN_SPLIT = re.compile(r"([0-9]+|[A-Za-z]+)")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Token:
    """A folded term and where it stands in the original text (character offsets)."""

    term: str
    start: int
    end: int


FOLD_CACHE_SIZE = 1 << 17  # distinct words as written; a day's papers have tens of thousands


class _Folds(dict[str, str]):
    """Word as written → term, filled on first sight.

    A dict rather than ``functools.lru_cache``: :func:`fold_all` looks words up with
    ``map(dict.__getitem__, …)``, all in C, twice as fast as calling a cached function per word,
    and indexing a day's abstracts folds a few hundred thousand words. Emptied when full, so a
    long-running service keeps a bounded vocabulary.
    """

    def __missing__(self, word: str) -> str:
        if len(self) >= FOLD_CACHE_SIZE:
            self.clear()
        term = self[word] = sys.intern(_plural(word.casefold()))
        return term


_FOLDS = _Folds()


def fold(word: str) -> str:
    """Case-fold and fold a simple English plural: gpus→gpu, studies→study, classes→class.

    The result is interned: "Video", "videos" and "video" fold to one string object, so a day's
    index holds each term once and a rule's word meets it by identity before any comparison.
    """
    return _FOLDS[word]


def fold_all(words: Iterable[str]) -> list[str]:
    """:func:`fold` of each word, in order."""
    return list(map(_FOLDS.__getitem__, words))


def _plural(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[Token]:
    return [Token(fold(m.group()), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def cut_words(text: str) -> tuple[list[str], list[int]]:
    """The words of ``text`` as written, and the running end offsets of gaps and words.

    ``split`` with a capturing group gives gap, word, gap, word, …, gap; the running sum of their
    lengths then says where word k starts (``bounds[2k]``, the end of its gap) and ends
    (``bounds[2k + 1]``). Splitting and summing run in C, several times faster than a match
    object per token, which is what indexing a day's abstracts spends its time on. ASCII text
    (most of it) takes the ASCII pattern, which cuts it the same way and runs faster.
    """
    parts = (_ASCII_TOKEN_SPLIT if text.isascii() else _TOKEN_SPLIT).split(text)
    return parts[1::2], list(accumulate(map(len, parts)))


def terms(text: str) -> list[str]:
    return [fold(m.group()) for m in _TOKEN.finditer(text)]


def squash_whitespace(text: str) -> str:
    """Fold hard line breaks and runs of spaces (abstracts come with them) into single spaces."""
    return _WHITESPACE.sub(" ", text).strip()
