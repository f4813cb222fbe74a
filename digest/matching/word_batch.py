"""Many texts cut into words at once, exactly as :func:`digest.text.cut_words` cuts each one.

Indexing a day's papers cuts thousands of abstracts into words, and a regular expression spends
its time per word, a large share of matching (``bench/RESULTS.md``). For ASCII text
(nearly all of it) the same cut is made for a batch of texts with numpy: where the class of a
character (letter, digit, other) changes, a run ends; runs of letters and runs of digits are the
words. One ``str.split`` over the batch, with every other character turned into a space and a
space put where letters meet digits, then makes the word strings, so there is no Python step per
word. Texts that are not ASCII go through ``cut_words``, which knows Unicode's letters and digits.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from digest.text import cut_words

# The class of each byte: 0 other, 1 ASCII letter, 2 ASCII digit (as ``[A-Za-z]+|[0-9]+`` cuts).
_KIND = np.zeros(256, dtype=np.uint8)
_KIND[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)] = 1
_KIND[np.frombuffer(b"0123456789", dtype=np.uint8)] = 2
_SPACE = np.uint8(ord(" "))
# Texts are cut in batches of about this many characters, which bounds the arrays' memory
# (about 20 bytes a character) while a batch still holds hundreds of abstracts.
BATCH_CHARS = 1 << 20

Cut = tuple[list[str], "array[int]"]


def cut_many(texts: Sequence[str]) -> list[Cut]:
    """For each text, its words as written and their offsets: word k spans ``bounds[2k]`` to
    ``bounds[2k + 1]`` (an ``array("q")``), as ``cut_words`` gives them less the final gap."""
    cuts: list[Cut | None] = [None] * len(texts)
    batch: list[int] = []
    size = 0
    for number, text in enumerate(texts):
        if not text.isascii():
            written, bounds = cut_words(text)
            cuts[number] = (written, array("q", bounds[:-1]))
            continue
        batch.append(number)
        size += len(text) + 1
        if size >= BATCH_CHARS:
            _cut_ascii(texts, batch, cuts)
            batch, size = [], 0
    if batch:
        _cut_ascii(texts, batch, cuts)
    return [cut if cut is not None else ([], array("q")) for cut in cuts]


def _cut_ascii(texts: Sequence[str], numbers: list[int], cuts: list[Cut | None]) -> None:
    """Cut ``texts[n]`` for each n in ``numbers`` (all ASCII), in one pass over them joined."""
    joined = "\n".join(texts[n] for n in numbers)  # "\n" is no word character: words never span texts
    raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    if not raw.size:
        return
    kind = _KIND[raw]
    change = np.flatnonzero(kind[1:] != kind[:-1]) + 1  # where a run of one class starts, past the first
    edges = np.concatenate(([0], change, [raw.size]))
    is_word = kind[edges[:-1]] != 0
    starts, ends = edges[:-1][is_word], edges[1:][is_word]
    # The word strings: every other character a space, and a space where letters meet digits.
    spaced = np.where(kind == 0, _SPACE, raw)
    glued = change[(kind[change] != 0) & (kind[change - 1] != 0)]
    if glued.size:
        spaced = np.insert(spaced, glued, _SPACE)
    words = spaced.tobytes().decode("ascii").split()
    # Each text's words, and their offsets within that text.
    lengths = np.fromiter((len(texts[n]) + 1 for n in numbers), dtype=np.int64, count=len(numbers))
    text_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    firsts = np.searchsorted(starts, text_starts)
    lasts = np.append(firsts[1:], starts.size)
    shift = np.repeat(text_starts, lasts - firsts)
    bounds = np.empty(2 * starts.size, dtype=np.int64)
    bounds[0::2] = starts - shift
    bounds[1::2] = ends - shift
    packed = bounds.tobytes()
    for number, first, last in zip(numbers, firsts.tolist(), lasts.tolist(), strict=True):
        offsets = array("q")
        offsets.frombytes(packed[16 * first : 16 * last])
        cuts[number] = (words[first:last], offsets)
