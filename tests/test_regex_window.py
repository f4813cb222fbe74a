"""The regex window count that keeps every accepted regex on RE2's fast engine (bench/rules.md)."""

from __future__ import annotations

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import RuleError
from digest.matching.regex_window import MAX_REGEX_WINDOW, window_width
from digest.matching.rules import parse_rules
from digest.matching.syntax import compile_regex


@pytest.mark.parametrize(
    ("pattern", "width"),
    [
        ("RTX\\s?40[89]0", 2),
        ("gpt-?4o?", 0),
        ("\\bLLa?MA\\b", 0),
        ("\\d{4}-\\d{2}-\\d{2}", 8),
        ("a.*b", 1),
        ("a.+?b", 1),
        (".{5,}", 6),
        (".{2,7}?", 7),
        ("e.{30}e.{30}zq", 60),
        ("[aeiou]........zq", 9),
        ("(.{3}){4}", 12),
        ("(?:e|a)(?:.|x){9}zq", 10),
        ("(a|b)*a(a|b){12}", 13),  # the textbook DFA blow-up, spelled with alternations
        ("GPT|LLaMA", 1),
        ("(?i)abc", 0),
        ("(?i:x.{3})", 3),
        ("(?P<n>..)", 2),
        ("[]a]{3}", 3),
        ("[^]]{3}", 3),
        ("[[:alpha:]]{4}", 4),
        ("[\\]x]{2}y", 2),
        ("\\pL{3}", 3),
        ("\\p{Greek}{3}", 3),
        ("\\Q.{99}\\E", 0),
        ("a{40}", 0),
    ],
)
def test_the_window_counts_what_classes_must_cover(pattern: str, width: int) -> None:
    assert window_width(pattern) == width


def test_a_rule_is_refused_past_the_window_and_accepted_at_it() -> None:
    parse_rules([f"/[aeiou][^q]{{{MAX_REGEX_WINDOW - 1}}}zq/"])
    with pytest.raises(RuleError, match=r"needs 9 characters matched by classes .*write \.\* for a gap, or NEAR/5"):
        parse_rules([f"/[aeiou][^q]{{{MAX_REGEX_WINDOW}}}zq/"])


ATOMS = st.sampled_from(["a", "zq", ".", "[a-z]", "[^q]", "\\w", "\\d", "(?:x|y)", "\\Q.\\E"])
ZERO_WIDTH = st.sampled_from(["", "\\b", "(?i)", "^"])
QUANTIFIERS = st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}", "{2,}", "*?", "{3}?"])


@st.composite
def patterns(draw: st.DrawFn, depth: int = 2) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        inner = draw(patterns(depth - 1)) if depth and draw(st.booleans()) else draw(ATOMS)
        atom = f"({inner})" if len(inner) > 1 else inner
        parts.append(draw(ZERO_WIDTH) + atom + draw(QUANTIFIERS))
    return "|".join(parts) if draw(st.booleans()) and len(parts) > 1 else "".join(parts)


@settings(max_examples=300, deadline=None)
@given(patterns())
def test_repeating_a_pattern_n_times_multiplies_its_window(pattern: str) -> None:
    compile_regex(pattern, False)  # every generated pattern is one RE2 accepts
    width = window_width(pattern)
    assert width >= 0
    assert window_width(f"(?:{pattern}){{3}}") == 3 * width
    assert window_width(f"{pattern}zq") == width
    assert window_width(f"(?:{pattern})+") == width


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_the_scanner_ends_on_any_pattern_re2_accepts(pattern: str) -> None:
    try:
        compile_regex(pattern, False)
    except re2.error:
        return
    assert window_width(pattern) >= 0
