"""Hypothesis: cutting many texts at once gives, text by text, exactly what ``cut_words`` gives.

``cut_many`` cuts ASCII texts with numpy in batches and leaves the rest to ``cut_words``; the index
relies on the two agreeing word for word and offset for offset (the index's own property test,
``test_index_properties``, then checks phrases and spans on top).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.matching import word_batch
from digest.matching.word_batch import cut_many
from digest.text import cut_words

PIECES = [
    "video", "Diffusion", "GPUs", "RTX4090", "4090", "4090D", "3D", "a1b2", "x", "_", "__init__", "1920x1280",
    " ", "  ", "-", ", ", ". ", "\n", "\t", "(", ")", "'", "/", "–", "naïve", "Straße", "İstanbul", "日本語", "٣",
]  # fmt: skip
text = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
    st.text(max_size=20),
)
texts = st.lists(text, max_size=12)


def expected(value: str) -> tuple[list[str], list[int]]:
    written, bounds = cut_words(value)
    return written, bounds[:-1]


@settings(max_examples=400, deadline=None)
@given(texts)
def test_many_texts_cut_as_each_alone(values: list[str]) -> None:
    cuts = cut_many(values)
    assert len(cuts) == len(values)
    for value, (written, bounds) in zip(values, cuts, strict=True):
        assert (written, bounds.tolist()) == expected(value)
        assert bounds.typecode == "q"


@settings(max_examples=100, deadline=None)
@given(texts)
def test_batches_split_anywhere_cut_the_same(values: list[str]) -> None:
    """With a tiny batch size every few texts start a new batch; nothing may shift across them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(word_batch, "BATCH_CHARS", 7)
        cuts = cut_many(values)
    assert [(w, b.tolist()) for w, b in cuts] == [expected(v) for v in values]


def test_letters_and_digits_part_and_words_never_run_across_texts() -> None:
    cuts = cut_many(["RTX4090 GPUs", "3D", "end", "", "naïve 3D"])
    assert [w for w, _ in cuts] == [["RTX", "4090", "GPUs"], ["3", "D"], ["end"], [], ["naïve", "3", "D"]]
    assert cuts[0][1].tolist() == [0, 3, 3, 7, 8, 12]
    assert cuts[4][1].tolist() == [0, 5, 6, 7, 7, 8]
