"""Votes in a real browser (Playwright driving Debian's chromium against uvicorn on 127.0.0.1): a
rendered digest's "not for me" links clicked, each vote pressed on its page, the suggestion read on
the manage page and accepted, and the rule changed. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.cycle.links import digest_links
from digest.mail.render import render_digest
from digest.mail.views import anchor_for
from digest.models import Item, Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import open_backend
from tests.email_fixtures import digest_for
from tests.test_browser_web import browser, new_page, shoot  # noqa: F401  (the module's browser fixture)
from tests.web_support import SECRET, Clock, make_settings, running, sample_items, seed_store

pytestmark = pytest.importorskip("tests.test_browser_web").pytestmark

ADA = "ada@example.org"
RULES = ("real-time", "4090")


@pytest.fixture
def site(tmp_path: Path, sample_days: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[Settings, list[Item]]]:
    settings = make_settings(tmp_path / "data", None)
    items = sample_items(sample_days)
    seed_store(settings, items)
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(Subscriber(ADA, RULES, subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    with running(settings, Clock()):
        yield settings, items


def votes(settings: Settings) -> dict[str, int]:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return store.votes(ADA)


def rules(settings: Settings) -> tuple[str, ...] | None:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        person = store.subscriber(ADA)
    return person.rules if person is not None else None


def test_votes_from_a_rendered_digest_become_a_suggestion_that_changes_the_rule_once_accepted(
    browser: Any,  # noqa: F811
    site: tuple[Settings, list[Item]],
) -> None:
    settings, items = site
    digest = digest_for(items, RULES, email=ADA)
    email_html = render_digest(digest, digest_links(Signer(SECRET), settings.public_url, digest)).html
    page, problems = new_page(browser)
    titles = ("Live Avatar", "SoulX-FlashTalk", "LLIA")
    for n, start in enumerate(titles):
        paper = next(e.item for e in digest.entries if e.item.title.startswith(start))
        page.goto("about:blank")  # the email as a mail client shows it: not under the site's CSP
        page.set_content(email_html)
        page.locator(f'[id="{anchor_for(paper.id)}"] + p').get_by_role("link", name="Not for me").click()
        page.get_by_role("heading", name="Not for me?").wait_for()
        assert start in page.locator("main").inner_text()
        assert votes(settings).get(paper.id) is None, "a GET records nothing"
        if n == 0:
            shoot(page, "feedback-01-vote")
        page.get_by_role("button", name="Not for me").click()
        page.get_by_role("heading", name="Noted: not for me").wait_for()
    assert sorted(votes(settings).values()) == [-1, -1, -1]
    shoot(page, "feedback-02-noted")

    page.get_by_text("“Manage your rules” link").wait_for()  # the Noted page hands out no manage token
    page.goto("about:blank")
    page.set_content(email_html)
    page.get_by_role("link", name="Manage your rules").click()
    section = page.locator("#suggestions")
    section.get_by_text("real-time → real-time -avatar: removes").wait_for()
    assert rules(settings) == RULES
    shoot(page, "feedback-03-suggestion")
    section.get_by_role("button", name="Change “real-time” to “real-time -avatar”").click()
    page.get_by_text("Your changes are saved.").wait_for()
    assert page.get_by_label("Keyword rules, one per line").input_value().splitlines()[0] == "real-time -avatar"
    assert rules(settings) == ("real-time -avatar", "4090")
    assert not problems, problems
