"""Suggested rule changes from votes (digest.matching.suggest): pure, and on real listings.

The counts a suggestion states are held to ``digest try``'s own matcher (``try_rule``), run
independently on the same papers: "removes 3 of 31" must be what the changed rule would have done.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from digest.matching.explain import try_rule
from digest.matching.rules import parse_rule
from digest.matching.suggest import RECENT_DAYS, Suggestion, narrowed, suggest
from digest.models import Item
from tests.email_fixtures import AS_OF, seed_items


def by_title(items: list[Item], *starts: str) -> list[str]:
    """The ids of the papers whose titles start so (each must be found once)."""
    ids = []
    for start in starts:
        found = [item.id for item in items if item.title.startswith(start)]
        assert len(found) == 1, start
        ids.append(found[0])
    return ids


def votes_of(rejected: list[str], liked: list[str] = ()) -> dict[str, int]:  # type: ignore[assignment]
    return {**dict.fromkeys(rejected, -1), **dict.fromkeys(liked, 1)}


def matched_ids(rule: str, items: list[Item]) -> set[str]:
    """What ``digest try RULE`` lists among ``items``."""
    return {entry.item.id for entry in try_rule(parse_rule(rule), items).entries}


# -- the two surveys of a day ---------------------------------------------------------------------
# The saved listings (../shared/seeds) hold no survey paper, so two are added to their real day:
# real titles of two survey papers on video diffusion, their abstracts paraphrased for this test.
SURVEYS = [
    Item(
        id="test-survey-1",
        source="hf_papers",
        title="A Survey on Video Diffusion Models",
        abstract=(
            "The recent wave of AI-generated content has been driven by diffusion models. This survey "
            "reviews video diffusion models for generation, editing and understanding, organises the "
            "literature into a taxonomy, and discusses open challenges and future directions."
        ),
        url="https://huggingface.co/papers/test-survey-1",
        listed_on=AS_OF,
    ),
    Item(
        id="test-survey-2",
        source="hf_papers",
        title="Video Diffusion Models: A Survey",
        abstract=(
            "Diffusion generative models have become a powerful technique for video. This survey gives "
            "an overview of video diffusion models: their architectures, temporal dynamics, applications "
            "and benchmarks, with a taxonomy of the field and the challenges that remain open."
        ),
        url="https://huggingface.co/papers/test-survey-2",
        listed_on=AS_OF,
    ),
]


def test_rejecting_the_two_surveys_of_a_day_suggests_minus_survey() -> None:
    day = seed_items() + SURVEYS
    liked = by_title(day, "MonarchRT", "Rolling Forcing")
    found = suggest(["video diffusion"], day, [], votes_of(["test-survey-1", "test-survey-2"], liked))
    assert found, "no suggestion"
    best = found[0]
    assert (best.rule, best.changed) == ("video diffusion", "video diffusion -survey")
    assert best.rejected_removed == 2 and best.liked_kept == 2 and best.liked_lost == 0
    before, after = matched_ids("video diffusion", day), matched_ids("video diffusion -survey", day)
    assert (best.matched, best.removed) == (len(before), len(before - after))
    assert best.describe() == (
        f"video diffusion → video diffusion -survey: removes {best.removed} of {best.matched} papers of the "
        "last 30 days, including the 2 you marked 'not for me'; keeps the 2 you liked"
    )


def test_on_real_listings_the_word_the_rejected_papers_share_is_proposed_with_counts_digest_try_agrees_with() -> None:
    items = seed_items()
    rejected = by_title(items, "LLIA", "Live Avatar", "SoulX-FlashTalk")
    liked = by_title(items, "LongLive", "MotionStream")
    found = suggest(["real-time", "4090"], items, [], votes_of(rejected, liked))
    best = found[0]
    assert best.changed == "real-time -avatar"
    mine_before = matched_ids("real-time", items) | matched_ids("4090", items)
    mine_after = matched_ids("real-time -avatar", items) | matched_ids("4090", items)
    assert best.matched == len(mine_before)
    assert best.removed == len(mine_before - mine_after)
    # "LLIA" is matched by 4090 too: the change keeps it, and says so by its count
    assert best.rejected_removed == len((mine_before - mine_after) & set(rejected)) == 2
    assert best.liked_kept == 2 and not best.liked_lost


def test_a_suggestion_never_removes_a_paper_the_person_liked() -> None:
    items = seed_items()
    rejected = by_title(items, "LLIA", "Live Avatar", "SoulX-FlashTalk")
    liked = by_title(items, "LongLive", "SoulX-FlashHead")  # an avatar-like talking head, liked
    for found in suggest(["real-time"], items, [], votes_of(rejected, liked)):
        assert found.liked_lost == 0
        assert not set(liked) - matched_ids(found.changed, items)


def test_one_rejected_paper_or_none_suggests_nothing() -> None:
    items = seed_items()
    one = by_title(items, "Live Avatar")
    assert suggest(["real-time"], items, [], votes_of(one)) == []
    assert suggest(["real-time"], items, [], votes_of([], by_title(items, "LongLive"))) == []


def test_a_word_that_would_remove_most_of_a_rules_papers_is_not_proposed() -> None:
    items = seed_items()
    # two rejected "video diffusion" papers share mostly generic words ("video", "generation", ...)
    rejected = by_title(items, "Video-Infinity", "Minute-Long Videos")
    for found in suggest(["video diffusion"], items, [], votes_of(rejected)):
        assert found.removed <= found.matched / 2


def test_title_narrowing_when_the_rejected_matched_in_the_abstract_and_the_liked_in_the_title() -> None:
    base = dict(source="hf_papers", url="https://example.org/p", listed_on=AS_OF)
    items = [
        Item(id="a", title="Gaussian splatting for cities", abstract="Street scenes at scale.", **base),
        Item(id="b", title="Gaussian splatting on phones", abstract="Mobile rendering.", **base),
        Item(id="c", title="Protein folding", abstract="Unlike gaussian splatting, we fold proteins.", **base),
        Item(id="d", title="Weather nowcasting", abstract="A gaussian splatting prior for clouds.", **base),
        Item(id="e", title="Robot grasping", abstract="Grasps, not gaussian splatting.", **base),
        Item(id="f", title="Dynamic Gaussian Splatting", abstract="Scenes that move.", **base),
    ]
    found = suggest(["gaussian splatting"], items, [], votes_of(["c", "d"], ["a", "b"]))
    titled = [s for s in found if s.changed == "title:(gaussian splatting)"]
    assert titled == [Suggestion("gaussian splatting", "title:(gaussian splatting)", 6, 3, 2, 2, 0)]
    assert matched_ids("title:(gaussian splatting)", items) == {"a", "b", "f"}


def test_papers_voted_on_long_ago_still_teach_but_only_the_last_30_days_are_counted() -> None:
    items = seed_items()
    rejected = by_title(items, "LLIA", "Live Avatar", "SoulX-FlashTalk")
    old = [replace(item, listed_on=date(2026, 9, 1)) for item in items if item.id in rejected]
    recent = [item for item in items if item.id not in rejected]
    found = suggest(["real-time"], recent, old, votes_of(rejected))
    assert found[0].changed == "real-time -avatar"
    assert found[0].rejected_removed == 3
    assert found[0].matched == len(matched_ids("real-time", recent)) and found[0].removed == 0
    assert RECENT_DAYS == 30


@pytest.mark.parametrize(
    ("rule", "word", "changed"),
    [
        ("video diffusion", "survey", "video diffusion -survey"),
        ("4090 real-time", "survey", "4090 real-time -survey"),
        ('title:4090 OR "video diffusion"', "survey", '(title:4090 OR "video diffusion") -survey'),
        ("diffus*", "survey", "diffus* -survey"),
        ("video diffusion", "and", "video diffusion -and"),
        ("video diffusion", "AND", None),  # an operator, not a word
        ("video diffusion", "two words", None),
    ],
)
def test_narrowed_adds_one_negated_word_and_keeps_the_rules_meaning(rule: str, word: str, changed: str | None) -> None:
    assert narrowed(rule, word) == changed
    if changed is not None:
        node = parse_rule(changed).node
        assert node.children[-1] == parse_rule(f"-{word}").node  # type: ignore[attr-defined]


def test_exclusion_rules_and_rules_that_no_longer_parse_give_no_suggestion() -> None:
    items = seed_items()
    rejected = by_title(items, "LLIA", "Live Avatar", "SoulX-FlashTalk")
    found = suggest(["real-time", "-survey"], items, [], votes_of(rejected))
    assert found and all(s.rule == "real-time" for s in found)
    assert suggest(["real-time", '"unclosed'], items, [], votes_of(rejected)) == []


def test_describe_reads_as_a_sentence() -> None:
    one = Suggestion("video diffusion", "video diffusion -survey", 37, 4, 1, 1, 0)
    assert one.describe() == (
        "video diffusion → video diffusion -survey: removes 4 of 37 papers of the last 30 days, "
        "including the one you marked 'not for me'; keeps the one you liked"
    )
    lost = Suggestion("x", "x -y", 1, 1, 0, 0, 1)
    assert lost.describe() == "x → x -y: removes 1 of 1 paper of the last 30 days; also removes one you liked"


def test_when_several_rules_match_the_rejected_papers_a_rule_of_its_own_is_proposed() -> None:
    items = seed_items()
    rejected = by_title(items, "LLIA", "Live Avatar", "SoulX-FlashTalk")
    rules = ["real-time", "diffusion", "avatar NEAR/3 generation"]
    found = suggest(rules, items, [], votes_of(rejected, by_title(items, "LongLive")))
    assert found, "no suggestion"
    best = found[0]
    assert (best.rule, best.changed) == ("", "-avatar")
    before = set().union(*(matched_ids(r, items) for r in rules))
    assert best.matched == len(before) and best.removed == len(before & matched_ids("avatar", items))
    assert best.rejected_removed == 3
    assert best.describe().startswith("add the rule -avatar (for all your rules): removes ")
