"""Hypothesis: the parser never crashes, and a rule's canonical form means and prints the same."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import RuleError
from digest.matching.rules import ItemIndex, Matcher, Rule, parse_rule
from digest.models import Item

FRAGMENTS = [
    "video", "diffusion", "4090", "GPUs", "rtx4090", "Straße", "İstanbul", "and", "survey", "diffus*", "vid*",
    "AND", "OR", "NOT", "-", "(", ")", '"', "*", ":", "/", "\\", "–",
    "title:", "abstract:", "author:", "org:", "keyword:", "source:", "category:", "has:code", "Title:", "foo:",
    "upvotes>=3", "comments<2", "upvotes>=", "/RTX\\s?40[89]0/", "/gpt-?4/i", "/(/", "-survey", '"video diffusion"',
]  # fmt: skip

rule_like = st.lists(
    st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from([" ", "", "  ", "\n"])), min_size=1, max_size=14
).map(lambda parts: "".join(f + sep for f, sep in parts))
TERMS = ["video", "video diffusion", '"RTX 4090"', "diffus*", "GPUs", "upvotes>=3", "has:code", "/gpt-?4/i", "İstanbul"]
well_formed = st.recursive(
    st.sampled_from(TERMS),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" AND ", " OR ", " "]), inner).map("".join),
        inner.map(lambda x: f"({x})"),
        inner.map(lambda x: f"NOT {x}"),
        inner.map(lambda x: f"-({x})"),
        st.tuples(st.sampled_from(["title:", "abstract:", "author:", "keyword:"]), inner).map(
            lambda p: f"{p[0]}({p[1]})"
        ),
    ),
    max_leaves=8,
)
any_text = st.one_of(st.text(max_size=80), rule_like, well_formed)


def paper(item_id: str, title: str, abstract: str, **fields: object) -> Item:
    return Item(item_id, "hf_papers", title, abstract, "https://e/x", date(2026, 1, 1), **fields)  # type: ignore[arg-type]


CORPUS = ItemIndex(
    [
        paper("a", "Video Diffusion on an RTX4090", "A survey of diffusers and GPUs.", upvotes=5, comments=1),
        paper("b", "İstanbul traffic with GPT4", "We use video and audio.", authors=("Kaiming He",), upvotes=2),
        paper("c", "Straße scenes", "Diffusion models, and RTX 4080 cards.", github_repo="https://github.com/o/r"),
        paper("d", "Nothing relevant", "At all.", organization="NVIDIA", ai_keywords=("video diffusion",)),
    ]
)


EVERY_PAPER = parse_rule("/[a-z]/i")  # every paper of CORPUS: what an exclusion is taken out of


def matched_docs(rule: Rule) -> set[int]:
    """The papers of CORPUS ``rule`` selects on its own (an exclusion: those it leaves), through Matcher.match."""
    return set(Matcher(CORPUS).match([EVERY_PAPER, rule] if rule.is_exclusion else [rule]))


def parsed_or_none(text: str) -> Rule | None:
    try:
        return parse_rule(text)
    except RuleError as error:
        assert 1 <= error.column <= len(text) + 1, (text, error.column)
        assert str(error).startswith(f"column {error.column}: ")
        return None


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_any_text_parses_or_raises_a_rule_error_with_a_position(text: str) -> None:
    parsed_or_none(text)  # any other exception fails the test


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_canonical_form_round_trips_and_matches_the_same_papers(text: str) -> None:
    rule = parsed_or_none(text)
    if rule is None:
        return
    again = parse_rule(rule.canonical)
    assert again.canonical == rule.canonical
    assert again.key == rule.key
    assert again.is_exclusion == rule.is_exclusion
    assert len(matched_docs(EVERY_PAPER)) == 4
    assert matched_docs(again) == matched_docs(rule)
