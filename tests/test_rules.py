"""The rule table (``tests/data/rule_cases.yaml``) and the tokenizer's base semantics."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from digest.errors import RuleError
from digest.models import Item
from digest.rules import ItemIndex, Matcher, parse_rule, parse_rules
from digest.text import fold, terms

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "data" / "rule_cases.yaml").read_text())


def item(title: str, abstract: str = "", item_id: str = "x") -> Item:
    return Item(
        id=item_id, source="test", title=title, abstract=abstract, url="https://e/x", listed_on=date(2026, 1, 1)
    )


@pytest.mark.parametrize("case", CASES, ids=[f"{c['rule']}|{c['title'][:30]}" for c in CASES])
def test_rule_case(case: dict[str, Any]) -> None:
    subject = item(case["title"], case.get("abstract", ""))
    matches = Matcher(ItemIndex([subject])).match([parse_rule(case["rule"])])
    assert (0 in matches) is case["match"]
    if case["match"]:
        texts = {"title": subject.title, "abstract": subject.abstract}
        marked = [texts[h.field][h.start : h.end] for m in matches[0] for h in m.highlights]
        assert marked == case["marks"]


def test_tokens_split_letters_from_digits() -> None:
    assert terms("RTX4090") == ["rtx", "4090"]
    assert terms("4090D") == ["4090", "d"]
    assert terms("video-diffusion") == ["video", "diffusion"]


def test_plural_folding_is_the_same_on_both_sides() -> None:
    assert fold("GPUs") == fold("gpu") == "gpu"
    assert fold("analysis") == "analysis"
    assert fold("diffusion") == "diffusion"


def test_shared_results_between_subscribers() -> None:
    index = ItemIndex([item("RTX 4090 tricks", item_id="a"), item("Nothing here", item_id="b")])
    matcher = Matcher(index)
    first = matcher.match(parse_rules(["4090"]))
    second = matcher.match(parse_rules([" 4090 ", "tricks"]))
    assert set(first) == {0} and set(second) == {0}
    assert [m.rule for m in second[0]] == ["4090", "tricks"]
    assert len(matcher._cache) == 2  # "4090" was evaluated once for both subscribers


@pytest.mark.parametrize("bad", ["", "   ", "---", "x" * 600])
def test_bad_rules_name_rule_and_column(bad: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(["ok", bad])
    assert str(caught.value).startswith("rule 2, column ")
