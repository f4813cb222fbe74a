"""Issue 27: the migration of stored rules for the new ``-``, warnings, ``digest try``'s new output,
and normalisation and NEAR as properties."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.matching.rules import ItemIndex, Matcher, parse_rule, parse_rules
from digest.matching.syntax import parse_node, pointer
from digest.state.migrations import migrate
from digest.text import forms, tokenize
from tests.conftest import cli_env, run_cli
from tests.test_rules import item
from tests.test_rules_cli import seed_store


def test_the_migration_keeps_what_stored_rules_meant() -> None:
    rules = ["-survey 4090", "4090 -survey", "-a b OR c", "diffusion", "NOT x y"]
    old = {"meta": {"1": {"schema_version": 3}}, "subscribers": {"1": {"email": "a@b.c", "rules": rules}}}
    upgraded, found = migrate(copy.deepcopy(old), "test")
    assert found == 3 and upgraded["meta"]["1"]["schema_version"] >= 4
    assert upgraded["subscribers"]["1"]["rules"] == [
        'NOT "survey 4090"',
        "4090 -survey",
        'NOT "a b" OR c',
        "diffusion",
        "NOT x y",
    ]
    paper = [item("A survey of RTX 4090 use"), item("survey 4090 today")]
    matcher = Matcher(ItemIndex(paper))
    assert set(matcher.decider.decide(parse_node('NOT "survey 4090"')).docs) == {0}


def test_warnings_for_what_people_mean_as_operators() -> None:
    assert "write OR" in parse_rule("video or audio").warnings[0]
    assert "'|'" in parse_rule("video | audio").warnings[0]
    assert "comma" in parse_rule("gaussian splatting, nerf").warnings[0]
    assert parse_rule("video OR audio").warnings == ()
    assert parse_rule('"video or audio"').warnings == ()


def test_a_caret_points_at_the_column() -> None:
    try:
        parse_rules(["title:(4090"])
    except Exception as error:
        assert pointer(error) == "  title:(4090\n        ^"  # type: ignore[arg-type]
    else:
        raise AssertionError("no error")


def test_try_piped_marks_matches_and_takes_date_and_dashdash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed_store(data)
    result = run_cli("try", "--days", "3", "--", "-survey 4090", env=cli_env(data))
    assert result.returncode == 0, result.stderr
    assert "rule: NOT survey AND 4090" in result.stdout
    assert "Serving LLMs on an RTX [[4090]]" in result.stdout
    assert "\x1b[" not in result.stdout
    old = (datetime.now(UTC).date() - timedelta(days=40)).isoformat()
    empty = run_cli("try", "4090", "--date", old, "--days", "2", env=cli_env(data))
    assert empty.returncode == 0, empty.stderr
    assert "No stored papers were listed" in empty.stdout and old in empty.stdout


def test_try_says_which_part_found_nothing_and_warns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed_store(data)
    result = run_cli("try", "4090 zebrafish", env=cli_env(data))
    assert "found nothing: " in result.stdout and '"4090 zebrafish"' in result.stdout
    both = run_cli("try", "(4090 AND zebrafish) OR title:quokka", env=cli_env(data))
    assert "found nothing: zebrafish, title:quokka" in both.stdout
    warned = run_cli("try", "video or audio", env=cli_env(data))
    assert "note: 'or' is read as a word" in warned.stdout
    bad = run_cli("try", "title:(4090", env=cli_env(data))
    assert bad.returncode == 2 and "  title:(4090\n        ^" in bad.stderr


NORMALISED = [
    ("CO2", "CO₂"),
    ("x2", "x²"),
    ("4090", "４０９０"),
    ("café", "cafe\u0301"),
    ("ﬁne", "fine"),
    ("视频", "视频扩散模型"),
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NORMALISED), st.sampled_from(["", "A ", "x-"]), st.sampled_from(["", " model", "-y"]))
def test_normalised_forms_match_both_ways(pair: tuple[str, str], before: str, after: str) -> None:
    rule, text = pair
    for r, t in ((rule, text), (text, rule)):
        if len(tokenize(r)) > len(tokenize(t)):
            continue
        assert 0 in Matcher(ItemIndex([item(before + t + after)])).match(parse_rules([r]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["video", "diffusion", "x", "the"]), min_size=2, max_size=12), st.integers(0, 6))
def test_near_is_what_reading_the_words_finds(words: list[str], distance: int) -> None:
    title = " ".join(words)
    where = {w: [k for k, v in enumerate(words) if v == w] for w in ("video", "diffusion")}
    expected = any(abs(a - b) - 1 <= distance for a in where["video"] for b in where["diffusion"])
    found = Matcher(ItemIndex([item(title)])).match(parse_rules([f"video NEAR/{distance} diffusion"]))
    assert (0 in found) is expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdehilnoprstuvwxy", min_size=2, max_size=9))
def test_a_word_and_each_of_its_forms_stand_for_each_other(word: str) -> None:
    for form in forms(word):
        assert word.lower() in forms(form) or form == word.lower()


def test_subscribe_warns_about_misreadings_and_points_at_errors(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    warned = run_cli("subscribe", "a@example.org", "-k", "video or audio", env=env)
    assert warned.returncode == 0, warned.stderr
    assert "note: 'or' is read as a word" in warned.stderr, "a warning, not a refusal"
    refused = run_cli("subscribe", "a@example.org", "-k", "title:(4090", env=env)
    assert refused.returncode == 2
    assert "  title:(4090\n        ^\n" in refused.stderr, "a caret under column 7"
