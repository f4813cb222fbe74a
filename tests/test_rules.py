"""The rule table (``tests/data/rule_cases.yaml``), the tokenizer's base semantics, and the matcher."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from digest.errors import RuleError
from digest.matching.rules import ItemIndex, Matcher, field_text, parse_rule, parse_rules
from digest.models import Item
from digest.text import fold, tokenize

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "data" / "rule_cases.yaml").read_text())


def item(title: str, abstract: str = "", item_id: str = "x", **fields: Any) -> Item:
    fields.setdefault("source", "test")
    return Item(id=item_id, title=title, abstract=abstract, url="https://e/x", listed_on=date(2026, 1, 1), **fields)


def case_rules(case: dict[str, Any]) -> list[str]:
    return [case["rule"]] if "rule" in case else list(case["rules"])


def case_item(case: dict[str, Any]) -> Item:
    return item(
        case.get("title", ""),
        case.get("abstract", ""),
        authors=tuple(case.get("authors", ())),
        organization=case.get("org"),
        ai_keywords=tuple(case.get("keywords", ())),
        categories=tuple(case.get("categories", ())),
        source=case.get("source", "test"),
        upvotes=case.get("upvotes", 0),
        comments=case.get("comments", 0),
        github_repo=case.get("github"),
    )


def case_id(case: dict[str, Any]) -> str:
    return f"{' ; '.join(case_rules(case))}|{case.get('title', 'error')[:30]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_rule_case(case: dict[str, Any]) -> None:
    texts = case_rules(case)
    if "error" in case:
        with pytest.raises(RuleError) as caught:
            parse_rules(texts)
        assert case["error"] in str(caught.value)
        return
    rules = parse_rules(texts)
    if "canonical" in case:
        assert rules[0].canonical == case["canonical"]
    subject = case_item(case)
    matches = Matcher(ItemIndex([subject])).match(rules)
    assert (0 in matches) is case["match"]
    if case["match"]:
        marked = [field_text(subject, h.field)[h.start : h.end] for m in matches[0] for h in m.highlights]
        assert marked == case["marks"]


def test_tokens_split_letters_from_digits() -> None:
    def terms(text: str) -> list[str]:
        return [token.term for token in tokenize(text)]

    assert terms("RTX4090") == ["rtx", "4090"]
    assert terms("4090D") == ["4090", "d"]
    assert terms("video-diffusion") == ["video", "diffusion"]


def test_plural_folding_is_the_same_on_both_sides() -> None:
    assert fold("GPUs") == fold("gpu") == "gpu"
    assert fold("analysis") == "analysis"
    assert fold("diffusion") == "diffusion"


def test_one_evaluation_per_distinct_rule_shared_by_subscribers() -> None:
    index = ItemIndex([item("RTX 4090 tricks", item_id="a"), item("Nothing here", item_id="b")])
    matcher = Matcher(index)
    calls: list[object] = []
    original = index.phrase_docs  # the decision; highlights are found only when a match is read

    def counting_phrase(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    index.phrase_docs = counting_phrase  # type: ignore[method-assign]
    first = matcher.match(parse_rules(["4090"]))
    second = matcher.match(parse_rules([" 4090 ", "Tricks"]))
    third = matcher.match(parse_rules(["tricks AND 4090"]))
    assert set(first) == set(second) == set(third) == {0}
    assert [m.rule for m in second[0]] == ["4090", "Tricks"]
    assert len(calls) == 2  # "4090" and "tricks" (also inside the AND, and in any case) looked up once


def test_rule_match_explains_each_rule_in_the_subscribers_order() -> None:
    paper = item("Video diffusion on an RTX 4090", "We train video diffusion models.", upvotes=30)
    matches = Matcher(ItemIndex([paper])).match(parse_rules(["4090", "video diffusion", "-survey", "upvotes>=10"]))
    assert [m.rule for m in matches[0]] == ["4090", "video diffusion", "upvotes>=10"]
    assert [(h.field, paper.title[h.start : h.end]) for h in matches[0][0].highlights] == [("title", "4090")]
    assert [h.field for h in matches[0][1].highlights] == ["title", "abstract"]
    assert matches[0][0].in_title and matches[0][2].highlights == ()


def test_exclusions_apply_to_every_rule_of_that_subscriber_only() -> None:
    papers = [item("A survey of diffusion", item_id="a"), item("RTX 4090 survey", item_id="b"), item("4090 fast")]
    matcher = Matcher(ItemIndex(papers))
    excluding = matcher.match(parse_rules(["diffusion", "4090", "-survey"]))
    other = matcher.match(parse_rules(["diffusion", "4090"]))
    assert set(excluding) == {2}
    assert set(other) == {0, 1, 2}


def test_phrases_search_many_items_and_report_each_occurrence() -> None:
    papers = [item(f"Paper {n}", f"gpu {n} and more GPUs; GPU kernels {n}", item_id=str(n)) for n in range(50)]
    hits = Matcher(ItemIndex(papers)).match(parse_rules(["gpu kernels"]))
    assert sorted(hits) == list(range(50))
    assert all(len(matches[0].highlights) == 1 for matches in hits.values())


@pytest.mark.parametrize("bad", ["", "   ", "---", "x" * 600, "title:(4090", '"open'])
def test_bad_rules_name_rule_and_column(bad: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(["ok", bad])
    assert str(caught.value).startswith("rule 2, column ")
    assert caught.value.rule_number == 2 and 1 <= caught.value.column <= len(bad) + 1


def test_the_issues_error_example() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(["title:(4090"])
    assert str(caught.value).startswith("rule 1, column 7: missing ')'")


def test_regex_length_is_limited() -> None:
    with pytest.raises(RuleError, match="longer than 200"):
        parse_rule("/" + "a" * 201 + "/")
    assert parse_rule("/" + "a" * 200 + "/").canonical.startswith("/aaa")


def test_a_regex_that_would_backtrack_forever_elsewhere_runs_in_linear_time() -> None:
    # (a+)+$ is catastrophic for backtracking engines on "aaaa…b"; RE2 answers at once.
    paper = item("a" * 5000 + "b")
    assert Matcher(ItemIndex([paper])).match(parse_rules(["/(a+)+$/"])) == {}
