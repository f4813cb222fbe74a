"""Tokens as the rule language sees text: the base semantics of SPEC.md in one place.

Text is cut at every character that is not a letter or digit, and again where letters meet digits
(``RTX4090`` → ``rtx 4090``). Combining marks belong to the word they follow (Devanagari vowel
signs, a decomposed "é"), superscript and subscript digits are digits (``CO₂`` → ``co 2``), and
each Han or kana character is a word of its own, so that ``视频`` (a phrase of two) matches inside
"视频扩散模型". Each token is normalised (NFKC: fullwidth "４０９０" is "4090") and case-folded
(:func:`normal`), on both sides. Plurals are not folded in the index: a rule's word stands for its
:func:`forms` (``patch`` → patch, patches), so a word that merely ends in "s" (news, thus, lens)
never loses it.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate


def _mark_ranges() -> str:
    """Combining marks (Mn, Mc) of the Basic Multilingual Plane, as a regex character class body."""
    spans: list[list[int]] = []
    for code in range(0x300, 0x10000):
        if unicodedata.category(chr(code)) in ("Mn", "Mc"):
            if spans and spans[-1][1] == code - 1:
                spans[-1][1] = code
            else:
                spans.append([code, code])
    return "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in spans)


# Han, kana: one word per character. Superscript and subscript digits: digits (NFKC says so).
CJK = "\\u3040-\\u30ff\\u3400-\\u4dbf\\u4e00-\\u9fff\\uf900-\\ufaff\\U00020000-\\U0002fa1f"
SUPSUB = "\\u00b2\\u00b3\\u00b9\\u2070\\u2074-\\u2079\\u2080-\\u2089"
_MARKS = _mark_ranges()
_DIGIT = f"[\\d{SUPSUB}]"
_LETTER = f"[^\\W\\d_{CJK}{SUPSUB}]"
_WORD = f"{_DIGIT}+|[{CJK}]|{_LETTER}(?:{_LETTER}|[{_MARKS}])*"
# A run of digits, a Han or kana character, or a run of letters (with the marks inside it).
_TOKEN = re.compile(_WORD)
# The same tokens as capturing splits; for ASCII text they are [0-9]+ and [A-Za-z]+.
_TOKEN_SPLIT = re.compile(f"({_WORD})")
_ASCII_TOKEN_SPLIT = re.compile(r"([0-9]+|[A-Za-z]+)")
_WHITESPACE = re.compile(r"\s+")


def first_control(text: str) -> int | None:
    """Where ``text``'s first control character (a NUL, a bell, an escape; not a tab) is, or None.
    Nobody types one, and PostgreSQL's text cannot even hold a NUL: rules and vote links refuse them."""
    return next((at for at, char in enumerate(text) if char != "\t" and unicodedata.category(char) == "Cc"), None)


def normal(word: str) -> str:
    """A word as compared: NFKC-normalised and case-folded (ASCII: lower-cased, the same thing)."""
    if word.isascii():
        return word.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", word).casefold())


@dataclass(frozen=True, slots=True)
class Token:
    """A folded term and where it stands in the original text (character offsets)."""

    term: str
    start: int
    end: int


FOLD_CACHE_SIZE = 1 << 17  # distinct words as written; a day's papers have tens of thousands


class _Normals(dict[str, str]):
    """Word as written → :func:`normal` of it, filled on first sight and interned.

    A dict rather than ``functools.lru_cache``: :func:`fold_all` looks words up with
    ``map(dict.__getitem__, …)``, all in C, twice as fast as calling a cached function per word,
    and indexing a day's abstracts normalises a few hundred thousand words. Emptied when full, so
    a long-running service keeps a bounded vocabulary.
    """

    def __missing__(self, word: str) -> str:
        if len(self) >= FOLD_CACHE_SIZE:
            self.clear()
        term = self[word] = sys.intern(normal(word))
        return term


_NORMALS = _Normals()

# Words that end in "s" but are no plural, so no singular is taken from them and no plural form
# of a shorter word ever stands for them: `news` is not "new", `THU` not "thus", `lens` not "Len".
_NOT_PLURAL_WORDS = """always analysis apparatus basis bias bonus bus calculus campus census chaos consensus corpus
    canvas focus fungus gas genus has his hippocampus is its lens less locus minus modulus news
    nucleus octopus onus opus perhaps plus radius series species status stimulus syllabus this thus
    torus towards unless upwards various versus virus was yes"""
NOT_PLURAL = frozenset(_NOT_PLURAL_WORDS.split())
_SIBILANT = ("s", "x", "z", "ch", "sh")


def singulars(word: str) -> set[str]:
    """``word`` (normalised) and the singulars it may be the plural of: patches → patch, patche;
    studies → study, studie; GPUs → gpu. Words of letters only, never one in :data:`NOT_PLURAL`.
    A candidate is kept only if ``word`` is its plural (:func:`_plural_forms`): "axs" is no plural of ax."""
    found = {word}
    if not word.isalpha() or word in NOT_PLURAL or len(word) < 3 or not word.endswith("s"):
        return found
    candidates = set() if word.endswith(("ss", "is")) else {word[:-1]}  # glass, analysis: not plurals
    if word.endswith("ies") and len(word) > 4:
        candidates.add(word[:-3] + "y")
    if word.endswith("es") and len(word) > 4:
        candidates.add(word[:-2])
    return found | {candidate for candidate in candidates if word in _plural_forms(candidate)}


def _plural_forms(word: str) -> set[str]:
    """How English makes a plural of ``word``: +es after s/x/z/ch/sh, else +s; y after a consonant → ies."""
    found = {word + "es"} if word.endswith(_SIBILANT) else {word + "s"}
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        found.add(word[:-1] + "ies")
    return found


def plurals(word: str) -> set[str]:
    """The plural forms of a singular: +s, +es after s/x/z/ch/sh, y → ies (none in NOT_PLURAL)."""
    if not word.isalpha() or len(word) < 2:
        return set()
    return {plural for plural in _plural_forms(word) - NOT_PLURAL if word in singulars(plural)}  # both ways


def forms(word: str) -> frozenset[str]:
    """Every normalised word a rule's ``word`` stands for: itself, its singulars, and their plurals.

    ``patch`` → patch, patches; ``boxes`` → boxes, box; ``movie`` → movie, movies; ``news`` → news,
    never new. Expanding the rule's word (a few forms, looked up in the index) instead of cutting
    every word of every paper down to a stem keeps the words of papers as they are.
    """
    found = singulars(normal(word))
    for singular in set(found):  # the word itself too: "gas" may be a singular (gases) as well as a plural
        found |= plurals(singular)
    return frozenset(found)


def fold(word: str) -> str:
    """A word normalised and cut to one singular (``GPUs`` → ``gpu``, ``boxes`` → ``box``): for
    telling whether two matched texts say the same thing; matching itself uses :func:`forms`."""
    term = _NORMALS[word]
    options = singulars(term)
    return min(options, key=len) if len(options) > 1 else term


def fold_all(words: Iterable[str]) -> list[str]:
    """:func:`normal` of each word (interned: one string object per term), in order."""
    return list(map(_NORMALS.__getitem__, words))


def tokenize(text: str) -> list[Token]:
    return [Token(_NORMALS[m.group()], m.start(), m.end()) for m in _TOKEN.finditer(text)]


def cut_words(text: str) -> tuple[list[str], list[int]]:
    """The words of ``text`` as written, and the running end offsets of gaps and words.

    ``split`` with a capturing group gives gap, word, gap, word, …, gap; the running sum of their
    lengths then says where word k starts (``bounds[2k]``, the end of its gap) and ends
    (``bounds[2k + 1]``). Splitting and summing run in C, with no match object per token:
    indexing a day's abstracts spends its time here. ASCII text
    (most of it) takes the ASCII pattern, which cuts it the same way and runs faster.
    """
    parts = (_ASCII_TOKEN_SPLIT if text.isascii() else _TOKEN_SPLIT).split(text)
    return parts[1::2], list(accumulate(map(len, parts)))


def squash_whitespace(text: str) -> str:
    """Fold hard line breaks and runs of spaces (abstracts come with them) into single spaces."""
    return _WHITESPACE.sub(" ", text).strip()
