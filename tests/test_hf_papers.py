"""Parsing the Daily Papers JSON, and fetching it page by page from a real local server."""

from __future__ import annotations

from datetime import date

import httpx

from digest.settings import HfPapersSettings
from digest.sources import make_client
from digest.sources.hf_papers import HfPapersSource, parse
from tests.servers import FakeHfApi

ENTRY = {
    "paper": {
        "id": "2406.12345",
        "authors": [{"name": "Ada Lovelace"}, {"name": " Alan Turing "}, {"hidden": True}],
        "publishedAt": "2024-06-20T17:59:59.000Z",
        "submittedOnDailyAt": "2024-06-21T03:14:15.000Z",
        "title": "Fast\n  Video Diffusion",
        "summary": "Line one\nline two.",
        "upvotes": 42,
        "ai_keywords": ["video diffusion", "4090"],
        "ai_summary": " A fast video\n diffusion model. ",
        "githubRepo": "https://github.com/x/y",
        "organization": {"name": "nvidia", "fullname": "NVIDIA"},
        "withdrawnAt": None,
    },
    "numComments": 3,
    "thumbnail": "https://cdn/x.png",
}


def test_parse_keeps_the_fields_worth_keeping() -> None:
    items, warnings = parse([ENTRY], "https://hf.example", date(2024, 6, 21))
    assert warnings == []
    (paper,) = items
    assert paper.id == "2406.12345"
    assert paper.title == "Fast Video Diffusion"
    assert paper.abstract == "Line one line two."
    assert paper.authors == ("Ada Lovelace", "Alan Turing")
    assert paper.url == "https://hf.example/papers/2406.12345"
    assert (paper.upvotes, paper.comments) == (42, 3)
    assert paper.organization == "NVIDIA"
    assert paper.github_repo == "https://github.com/x/y"
    assert paper.ai_keywords == ("video diffusion", "4090")
    assert paper.ai_summary == "A fast video diffusion model."
    assert paper.listed_on == date(2024, 6, 21)
    assert paper.published_at is not None and paper.published_at.year == 2024


def test_parse_skips_malformed_entries_with_a_warning() -> None:
    broken = [{"paper": {"title": "no id"}}, "garbage", {"paper": {"id": "1", "title": ""}}, ENTRY]
    items, warnings = parse(broken, "https://hf.example", date(2024, 6, 21))
    assert [i.id for i in items] == ["2406.12345"]
    assert len(warnings) == 3 and all("skipped malformed paper" in w for w in warnings)


def test_fetch_pages_until_a_short_page(hf_api: FakeHfApi) -> None:
    source = HfPapersSource(HfPapersSettings(base_url=hf_api.base_url, page_size=50))
    with make_client() as client:
        result = source.fetch(client, [date(2026, 11, 20)])
    assert len(result.items) == 64
    assert [r.query["p"] for r in hf_api.requests] == ["0", "1"]
    assert all(r.query["limit"] == "50" for r in hf_api.requests)


def test_fetch_reports_failed_days_and_garbage(hf_api: FakeHfApi) -> None:
    hf_api.script = [(503, {}, b"down"), (200, {"Content-Type": "application/json"}, b"<html>oops")]
    source = HfPapersSource(HfPapersSettings(base_url=hf_api.base_url))
    with make_client() as client:
        result = source.fetch(client, [date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)])
    assert result.failed_days == [date(2026, 11, 19), date(2026, 11, 20)]
    assert "HTTP 503" in result.errors[0] and "not JSON" in result.errors[1]
    assert result.items == []  # day 3 is empty in the sample


def test_user_agent_is_clear() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["user-agent"])
        return httpx.Response(200, json=[])

    source = HfPapersSource(HfPapersSettings(base_url="https://hf.example"))
    with make_client(transport=httpx.MockTransport(handler)) as client:
        source.fetch(client, [date(2026, 1, 1)])
    assert seen and seen[0].startswith("digest/")
