"""The rule language from the command line: errors at subscribe time, ``digest try``, and a real cycle."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from digest.models import Item, Subscriber
from digest.paths import STORE_FILE
from tests.conftest import cli_env, on_postgresql, pass_store, run_cli
from tests.servers import FakeHfApi, SmtpSink
from tests.test_end_to_end import DAY1, DAY2, ids_in

SPLATTING = re.compile(r"(?<![a-z])gaussian[^a-z0-9]+splatting(?![a-z])", re.I)
LIDAR = re.compile(r"(?<![a-z])lidar", re.I)


def paper(item_id: str, title: str, listed_on: date, abstract: str = "", **fields: Any) -> Item:
    return Item(item_id, "hf_papers", title, abstract, f"https://huggingface.co/papers/{item_id}", listed_on, **fields)


def seed_store(data_dir: Path) -> None:
    """Papers listed yesterday (today's date moves on while tests run, so keep a margin) and long ago."""
    recent = datetime.now(UTC).date() - timedelta(days=1)
    papers = [
        paper("2611.00001", "Serving LLMs on an RTX 4090", recent, "We measure throughput.", upvotes=12),
        paper("2611.00002", "Efficient Video Diffusion Transformers", recent, "Fast sampling on one RTX4090 card."),
        paper("2611.00003", "[bold]Markup[/bold] for a 4090 survey", recent, "A survey."),
        paper("2611.00004", "Language models", recent, "Nothing to see."),
        replace(paper("2611.00005", "Withdrawn 4090 paper", recent), withdrawn=True),
        paper("2610.00006", "An old RTX 4090 paper", recent - timedelta(days=30)),
    ]
    with pass_store(data_dir) as store:
        store.upsert_items(papers, datetime.now(UTC))


def stored_subscribers(data_dir: Path) -> list[Subscriber]:
    with pass_store(data_dir, write=False) as store:
        return store.subscribers()


def store_contents(data_dir: Path) -> tuple[object, ...]:
    """What the store holds, through the store's own methods (the papers, people, sources, cycles)."""
    with pass_store(data_dir, write=False) as store:
        everything = store.items_listed_between(date(1970, 1, 1), date(9999, 12, 31))
        return everything, store.seen_count, store.subscribers(), store.source_states(), store.cycles(last=100)


def test_subscribe_refuses_a_bad_rule_naming_rule_and_column(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    result = run_cli("subscribe", "x@y.org", "-k", "title:(4090", env=env)
    assert result.returncode == 2
    assert "rule 1, column 7: missing ')'" in result.stderr
    second = run_cli("subscribe", "x@y.org", "-k", "4090", "-k", "/RTX(40/", env=env)
    assert second.returncode == 2
    assert "rule 2, column 1: bad regular expression" in second.stderr
    assert stored_subscribers(tmp_path / "data") == []


def test_subscribe_refuses_exclusions_alone_and_accepts_them_beside_a_rule(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    alone = run_cli("subscribe", "x@y.org", "-k", "-survey", env=env)
    assert alone.returncode == 2
    assert "only excludes papers" in alone.stderr
    both = run_cli("subscribe", "x@y.org", "-k", "4090", "-k", "-survey", env=env)
    assert both.returncode == 0, both.stderr
    assert [s.rules for s in stored_subscribers(tmp_path / "data")] == [("4090", "-survey")]


def test_try_lists_recent_matches_with_their_words_and_a_count(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    seed_store(data)
    postgresql = on_postgresql(request.config)
    before = b"" if postgresql else (data / STORE_FILE).read_bytes()
    contents = store_contents(data)
    result = run_cli("try", 'title:4090 OR "video diffusion"', "--days", "3", env=cli_env(data))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'rule: title:4090 OR "video diffusion"' in out
    assert "Serving LLMs on an RTX [[4090]]" in out and "Efficient [[Video Diffusion]] Transformers" in out
    assert "[bold]Markup[/bold] for a [[4090]] survey" in out  # feed text is printed as is, never as markup
    assert "Language models" not in out
    assert "An old RTX 4090 paper" not in out  # listed 30 days ago, outside --days 3
    assert "Withdrawn 4090 paper" not in out
    assert "matched: “4090” (title)" in out
    assert "matched: “Video Diffusion” (title)" in out
    assert re.search(r"3 of 4 stored papers listed \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d match\.", out)
    assert store_contents(data) == contents  # read-only
    if not postgresql:
        assert (data / STORE_FILE).read_bytes() == before


def test_try_highlights_the_matched_words_on_a_colour_terminal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed_store(data)
    result = run_cli("try", "diffusion", env=cli_env(data, FORCE_COLOR="1", TERM="xterm-256color"))
    assert result.returncode == 0, result.stderr
    # The word is wrapped in an escape sequence with a yellow background (43), the rest is not.
    assert re.search(r"\x1b\[[0-9;]*43[0-9;]*mDiffusion\x1b\[", result.stdout)
    assert not re.search(r"\x1b\[[0-9;]*43[0-9;]*mVideo", result.stdout)


def test_try_shows_what_an_exclusion_removes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed_store(data)
    result = run_cli("try", "-survey", env=cli_env(data))
    assert result.returncode == 0, result.stderr
    assert "rule: NOT survey" in result.stdout
    assert "an exclusion" in result.stdout
    assert "Markup[/bold] for a 4090 [[survey]]" in result.stdout and "Serving LLMs" not in result.stdout
    assert "1 of 4 stored papers" in result.stdout


def test_try_reports_a_bad_rule_and_an_empty_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad = run_cli("try", "title:(4090", env=cli_env(data))
    assert bad.returncode == 2
    assert "column 7: missing ')'" in bad.stderr
    empty = run_cli("try", "4090", env=cli_env(data))
    assert empty.returncode == 0, empty.stderr
    assert "no papers stored yet" in empty.stdout
    assert not (data / STORE_FILE).exists()


def test_a_cycle_applies_fields_and_exclusions(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data", hf_api, smtp)
    for address, rules in {
        "ex@example.org": ["gaussian splatting", "-lidar"],
        "title@example.org": ["title:(gaussian splatting)"],
    }.items():
        result = run_cli("subscribe", address, *(arg for rule in rules for arg in ("-k", rule)), env=env)
        assert result.returncode == 0, result.stderr
    run = run_cli("run", "--date", DAY2, env=env)
    assert run.returncode == 0, run.stderr

    entries = [e["paper"] for day in (DAY1, DAY2) for e in hf_api.days[day]]
    text = {p["id"]: p["title"] + " " + " ".join(p["summary"].split()) for p in entries}
    excluded = {i for i, t in text.items() if SPLATTING.search(t) and LIDAR.search(t)}
    want_ex = {i for i, t in text.items() if SPLATTING.search(t)} - excluded
    want_title = {p["id"] for p in entries if SPLATTING.search(p["title"])}
    assert excluded and want_ex and want_title - want_ex  # the sample exercises both rules
    assert set(ids_in(smtp, "ex@example.org")) == want_ex
    assert set(ids_in(smtp, "title@example.org")) == want_title
