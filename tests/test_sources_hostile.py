"""Hostile or sloppy Daily Papers payloads never drop a paper silently, and never hang a fetch.

A paper is skipped (with a warning naming its place) only when it has no id or no title; every
other field is read leniently. A day whose pages do not add up — a server that repeats a page, or
one that never stops sending full pages — fails for that day (retried next cycle), keeping what
was read, instead of being marked done with papers missing.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.models import Item
from digest.settings import HfPapersSettings
from digest.sources import arxiv, make_client
from digest.sources.hf_papers import MAX_PAPERS_PER_DAY, HfPapersSource, parse
from digest.sources.keepable import keepable_item
from tests.conftest import cli_env, pass_store, run_cli
from tests.servers import FakeHfApi, SmtpSink

BASE = "https://hf.example"
DAY = date(2026, 11, 20)
RUN_DAY = "2026-11-20"
JSON_HEADERS = {"Content-Type": "application/json"}

PAPER_FIELDS = [
    "authors",
    "summary",
    "upvotes",
    "publishedAt",
    "submittedOnDailyAt",
    "ai_keywords",
    "githubRepo",
    "organization",
    "withdrawnAt",
]
ENTRY_FIELDS = ["numComments", "thumbnail", "title"]  # the entry's title is a fallback only

# Any JSON value, with the strings and keys a sloppy API would plausibly send mixed in.
LIKELY_STRINGS = st.sampled_from(
    ["", " ", "1.2k", "many", "3M+", "1,234", "-5", "1e400", "NaN", "2024-06-20T17:59:59.000Z", "2024-06-20",
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "javascript:alert(1)", "https://github.com/x/y"]
)  # fmt: skip
LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | LIKELY_STRINGS
KEYS = st.sampled_from(["name", "fullname", "hidden", "user"]) | st.text(max_size=6)
JSON_VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=8
)


def entry(paper_id: Any = "2611.01230", title: Any = "Zebra codecs for video", **paper: Any) -> dict[str, Any]:
    return {"paper": {"id": paper_id, "title": title, **paper}}


# -- parse: keep every paper that has an id and a title ---------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    paper_fields=st.dictionaries(st.sampled_from(PAPER_FIELDS), JSON_VALUES),
    entry_fields=st.dictionaries(st.sampled_from(ENTRY_FIELDS), JSON_VALUES),
)
def test_any_json_in_any_cosmetic_field_keeps_the_paper(
    paper_fields: dict[str, Any], entry_fields: dict[str, Any]
) -> None:
    payload = [{**entry(**paper_fields), **entry_fields}]
    items, warnings = parse(json.loads(json.dumps(payload)), BASE, DAY)
    assert warnings == []
    (item,) = items
    assert (item.id, item.title, item.url) == ("2611.01230", "Zebra codecs for video", f"{BASE}/papers/2611.01230")
    assert abs(item.listed_on - DAY) <= timedelta(days=1)  # never moved out of the window it was listed in
    assert item.upvotes >= 0 and item.comments >= 0
    assert all(isinstance(name, str) and name for name in item.authors + item.ai_keywords)
    assert item.github_repo is None or item.github_repo.startswith(("http://", "https://"))
    # The store keeps it as strict JSON and reads back the same paper.
    assert Item.from_record(json.loads(json.dumps(item.to_record(), allow_nan=False))) == item


IDS = st.sampled_from(["2611.01230", " 2611.01231 ", "", " "]) | st.integers() | JSON_VALUES
TITLES = st.sampled_from(["A title", "  ", ""]) | st.integers() | JSON_VALUES
PAPERS = st.fixed_dictionaries({"id": IDS, "title": TITLES}, optional={f: JSON_VALUES for f in PAPER_FIELDS})
ENTRIES = st.fixed_dictionaries({"paper": PAPERS | JSON_VALUES}, optional={f: JSON_VALUES for f in ENTRY_FIELDS})


def has_id_and_title(value: Any) -> bool:
    """The rule, written independently: an object with a paper, a string or integer id, a title."""

    def text(v: Any) -> bool:
        return (isinstance(v, str) and v.strip() != "") or (isinstance(v, int | float) and not isinstance(v, bool))

    if not isinstance(value, dict) or not isinstance(value.get("paper"), dict):
        return False
    paper_id, title = value["paper"].get("id"), value["paper"].get("title")
    id_ok = (isinstance(paper_id, str) and paper_id.strip() != "") or type(paper_id) is int
    return id_ok and (text(title) or text(value.get("title")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ENTRIES | JSON_VALUES, max_size=6))
def test_a_page_keeps_exactly_the_entries_with_an_id_and_a_title(payload: list[Any]) -> None:
    items, warnings = parse(payload, BASE, DAY)
    assert len(items) == sum(map(has_id_and_title, payload))
    assert len(items) + len(warnings) == len(payload)  # each entry is a paper or a warning, none vanishes


@pytest.mark.parametrize(
    ("fields", "expect"),
    [
        ({"upvotes": "1.2k"}, {"upvotes": 1200}),
        ({"upvotes": "many"}, {"upvotes": 0}),
        ({"upvotes": "1,234"}, {"upvotes": 1234}),
        ({"upvotes": 7.0}, {"upvotes": 7}),
        ({"upvotes": float("inf")}, {"upvotes": 0}),  # int(inf) raised OverflowError out of the fetch
        ({"upvotes": -3}, {"upvotes": 0}),
        ({"authors": 7}, {"authors": ()}),
        ({"authors": ["Ada", {"name": " Al  T "}, {"name": 5}, None, []]}, {"authors": ("Ada", "Al T", "5")}),
        ({"summary": 12345}, {"abstract": "12345"}),
        ({"summary": {"text": "x"}}, {"abstract": ""}),
        ({"ai_keywords": "video"}, {"ai_keywords": ()}),
        ({"ai_keywords": ["video", 4090, None, ""]}, {"ai_keywords": ("video", "4090")}),
        ({"organization": ["NVIDIA"]}, {"organization": None}),
        ({"organization": {"fullname": 3, "name": "nvidia"}}, {"organization": "nvidia"}),
        ({"githubRepo": 42}, {"github_repo": None}),
        ({"githubRepo": "javascript:alert(1)"}, {"github_repo": None}),
        ({"publishedAt": "yesterday"}, {"published_at": None}),
        ({"publishedAt": 1718900000}, {"published_at": None}),
        ({"submittedOnDailyAt": "1999-01-01T00:00:00Z"}, {"listed_on": DAY}),
        ({"withdrawnAt": 7}, {"withdrawn": False}),
        ({"withdrawnAt": "2026-11-20T10:00:00Z"}, {"withdrawn": True}),
    ],
)  # fmt: skip
def test_odd_cosmetic_values_are_coerced(fields: dict[str, Any], expect: dict[str, Any]) -> None:
    items, warnings = parse([entry(**fields)], BASE, DAY)
    assert warnings == []
    (item,) = items
    assert {key: getattr(item, key) for key in expect} == expect


def test_entry_level_odd_values_are_coerced() -> None:
    payload = [{**entry(), "numComments": "many", "thumbnail": ["x.png"]}]
    (item,), warnings = parse(payload, BASE, DAY)
    assert warnings == [] and item.comments == 0 and item.thumbnail is None


def test_ids_and_titles_that_are_numbers() -> None:
    payload = [entry(paper_id=123456), entry(paper_id="2611.01231", title=4090), entry(paper_id=2611.0123)]
    items, warnings = parse(payload, BASE, DAY)
    assert [(i.id, i.title) for i in items] == [("123456", "Zebra codecs for video"), ("2611.01231", "4090")]
    # A float would lose the id's trailing zero (2611.01230 → 2611.0123): refused, by name.
    (warning,) = warnings
    assert "entry 2" in warning and "2611.0123" in warning and "string" in warning


def test_only_a_missing_id_or_title_skips_a_paper_and_the_warning_says_where() -> None:
    payload = ["garbage", {"no": "paper"}, entry(paper_id=None), entry(title=["x"]), entry(paper_id="2611.09999")]
    items, warnings = parse(payload, BASE, DAY, offset=50)  # the page after a first page of 50
    assert [i.id for i in items] == ["2611.09999"]
    assert [w.split(":")[0] for w in warnings] == [f"{DAY} entry {n}" for n in (50, 51, 52, 53)]
    assert "not an object" in warnings[0] and "paper is missing" in warnings[1]
    assert "paper.id is missing" in warnings[2] and "no title" in warnings[3]


# -- paging: a day is read whole, or it fails and is fetched again ----------------------------------
def page_of(first: int, count: int) -> list[dict[str, Any]]:
    return [entry(paper_id=f"2611.{n:05d}", title=f"Paper {n}") for n in range(first, first + count)]


class EchoApi(FakeHfApi):
    """Ignores ``p=``: every page is the day's first page."""

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return 200, JSON_HEADERS, json.dumps(page_of(0, int(query["limit"]))).encode()


class EndlessApi(FakeHfApi):
    """A full page of new papers for any ``p=``, forever."""

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        limit, page = int(query["limit"]), int(query["p"])
        return 200, JSON_HEADERS, json.dumps(page_of(page * limit, limit)).encode()


@pytest.fixture
def echo_api() -> Any:
    api = EchoApi().start()
    yield api
    api.stop()


@pytest.fixture
def endless_api() -> Any:
    api = EndlessApi().start()
    yield api
    api.stop()


def fetch(api: FakeHfApi, page_size: int, days: list[date]) -> Any:
    source = HfPapersSource(HfPapersSettings(base_url=api.base_url, page_size=page_size))
    started = time.monotonic()
    with make_client() as client:
        result = source.fetch(client, days)
    assert time.monotonic() - started < 60  # bounded: it ends, whatever the server does
    return result


def test_a_server_that_repeats_its_first_page_fails_the_day_and_keeps_the_papers(echo_api: EchoApi) -> None:
    result = fetch(echo_api, 50, [DAY])
    assert [r.query["p"] for r in echo_api.requests] == ["0", "1"]  # noticed at once, not 50 pages later
    assert result.failed_days == [DAY]
    (error,) = result.errors
    assert error.startswith(f"hf_papers {DAY}: ") and f"{echo_api.base_url}/api/daily_papers?" in error
    assert "p=1" in error and "ignore p=" in error
    assert sorted(i.id for i in result.items) == [f"2611.{n:05d}" for n in range(50)]  # each once


def test_a_server_with_endless_full_pages_fails_the_day_within_the_bound(endless_api: EndlessApi) -> None:
    result = fetch(endless_api, 100, [DAY, DAY + timedelta(days=1)])
    pages = MAX_PAPERS_PER_DAY // 100 + 1
    assert len(endless_api.requests) == 2 * pages
    assert result.failed_days == [DAY, DAY + timedelta(days=1)]
    assert f"hf_papers {DAY}: still full pages after {pages} pages" in result.errors[0]
    assert f"p={pages - 1}" in result.errors[0]
    assert len({i.id for i in result.items if i.listed_on == DAY}) == pages * 100  # what was read is kept


def test_a_day_of_ten_thousand_papers_is_read_whole() -> None:
    api = FakeHfApi(days={RUN_DAY: page_of(0, MAX_PAPERS_PER_DAY)}).start()
    try:
        result = fetch(api, 100, [DAY])
    finally:
        api.stop()
    assert result.failed_days == [] and result.errors == []
    assert len({i.id for i in result.items}) == len(result.items) == MAX_PAPERS_PER_DAY  # 2,500 before


def test_pages_that_overlap_a_little_are_normal_paging() -> None:
    """A paper submitted between two requests shifts the list by one: the next page repeats one paper."""
    pages = [page_of(0, 5), page_of(4, 5), page_of(8, 2)]
    api = FakeHfApi(script=[(200, JSON_HEADERS, json.dumps(page).encode()) for page in pages]).start()
    try:
        result = fetch(api, 5, [DAY])
    finally:
        api.stop()
    assert result.failed_days == [] and len(api.requests) == 3
    assert [i.id for i in result.items] == [f"2611.{n:05d}" for n in range(10)]


# -- through the CLI: the paper reaches the subscriber ------------------------------------------------
HOSTILE = [
    {**entry("2611.70001", "Zebra one", upvotes="1.2k", authors=7), "numComments": "many"},
    entry("2611.70002", "Zebra two", summary=12345, organization=["x"], githubRepo="javascript:alert(1)"),
    entry("2611.70003", "Zebra three", upvotes=float("inf"), publishedAt="yesterday", ai_keywords="zebra"),
    entry("2611.70004", "Zebra four", submittedOnDailyAt="1999-01-01T00:00:00Z", withdrawnAt=0),
    entry("2611.70005", 4090),
    entry(2611.7006, "Zebra with a float id"),  # refused: its id cannot be trusted
]


def subscribe(env: dict[str, str], rule: str) -> None:
    result = run_cli("subscribe", "zoe@example.org", "-k", rule, env=env)
    assert result.returncode == 0, result.stderr


def plain_text(smtp: SmtpSink) -> str:
    (message,) = smtp.to("zoe@example.org")
    text: str = message.get_body(preferencelist=("plain",)).get_content()
    return text


def run_day(
    entries: list[dict[str, Any]], rule: str, smtp: SmtpSink, data_dir: Path
) -> subprocess.CompletedProcess[str]:
    """Zoe subscribes to ``rule``; ``digest run`` of a day whose listing is ``entries``."""
    api = FakeHfApi(days={RUN_DAY: entries}).start()
    try:
        env = cli_env(data_dir, api, smtp)
        subscribe(env, rule)
        return run_cli("run", "--date", RUN_DAY, env=env)
    finally:
        api.stop()


def test_a_paper_with_hostile_fields_reaches_the_subscriber(smtp: SmtpSink, tmp_path: Path) -> None:
    result = run_day(HOSTILE, "zebra OR 4090", smtp, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    text = plain_text(smtp)
    for n in range(1, 6):
        assert f"/papers/2611.7000{n}" in text
    assert "1200 upvotes" in text and "javascript:" not in text
    assert "float id" not in text
    assert "entry 5" in result.stderr and "2611.7006" in result.stderr  # the one skipped is named


def test_a_nul_or_a_lone_surrogate_is_dropped_and_the_paper_kept_on_either_store(
    smtp: SmtpSink, tmp_path: Path
) -> None:
    """PostgreSQL's text and jsonb take neither (the fetch of the day failed there); TinyDB did."""
    odd = entry("2611.70007\x00", "Zebra\x00 with \ud800odd text", summary="An \udfffabstract\x00.")
    result = run_day([odd], "zebra", smtp, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    text = plain_text(smtp)
    assert "/papers/2611.70007" in text and "Zebra with odd text" in text
    with pass_store(tmp_path / "data", write=False) as store:
        kept = store.item("2611.70007")
    assert kept is not None and (kept.title, kept.abstract) == ("Zebra with odd text", "An abstract.")


def test_a_repeated_page_through_the_cli_delivers_what_was_read_and_fails_the_day(
    smtp: SmtpSink, tmp_path: Path
) -> None:
    api = EchoApi().start()
    try:
        env = cli_env(tmp_path / "data", api, smtp, DIGEST_LOOKBACK_DAYS="1")
        subscribe(env, "paper")
        result = run_cli("run", "--date", RUN_DAY, env=env)
    finally:
        api.stop()
    assert result.returncode == 1 and "source down: hf_papers" in result.stdout
    assert "ignore p=" in result.stderr
    text = plain_text(smtp)
    assert "/papers/2611.00049" in text  # the papers that were read are not held back
    assert f"could not be reached for {RUN_DAY}" in text  # and the digest says the day is incomplete


# -- arXiv: the same rule ------------------------------------------------------------------------------
def test_an_arxiv_paper_with_no_date_anywhere_is_listed_on_the_day_it_was_fetched() -> None:
    payload = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>cs.CV updates on arXiv.org</title>
<item><title>Undated zebras</title><link>https://arxiv.org/abs/2611.01234</link>
<description>arXiv:2611.01234v1 Announce Type: new Abstract: Stripes.</description></item></channel></rss>"""
    items, warnings = arxiv.parse(payload, fetched_on=DAY)
    assert warnings == [] and [(i.id, i.listed_on, i.published_at) for i in items] == [("2611.01234", DAY, None)]


def without_unkeepable(text: str) -> str:
    return "".join(c for c in text if c != "\x00" and not 0xD800 <= ord(c) <= 0xDFFF)


@given(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3))
def test_keepable_drops_nul_and_surrogates_and_nothing_else(text: str, authors: list[str]) -> None:
    item = Item("i" + text, "s", text, "a", "u", date(2026, 11, 2), authors=tuple(authors))
    kept = keepable_item(item)
    assert (kept.id, kept.title, kept.abstract) == ("i" + without_unkeepable(text), without_unkeepable(text), "a")
    if all(without_unkeepable(a) == a for a in authors):
        assert kept.authors == item.authors
    else:  # an author who was nothing but such characters is no author
        assert kept.authors == tuple(a for a in map(without_unkeepable, authors) if a)
    if without_unkeepable(text) == text and kept.authors == item.authors:
        assert kept is item
