"""A real browser on the web front: Playwright driving Debian's chromium against uvicorn on 127.0.0.1,
with the confirmation email read from a real aiosmtpd server. Screenshots of every page at 390 px
and 1280 px go to ``test-artifacts/`` (gitignored) for people to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from digest.models import Item, Subscriber
from digest.settings import Settings
from digest.state.backend import open_backend
from tests.servers import SmtpSink
from tests.web_support import Clock, link_in, make_settings, running, sample_items, seed_store

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTHS = (390, 1280)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="chromium is not installed (Debian: apt-get install -y chromium); browser tests need it",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path, smtp: SmtpSink, sample_days: dict[str, list[dict[str, Any]]]) -> Iterator[Settings]:
    settings = make_settings(tmp_path / "data", smtp)
    hostile = Item("2611.99001", "hf_papers", "<img src=x onerror=alert(1)> Video Diffusion at 60 FPS", "", "https://e/1",
                   sample_items(sample_days)[0].listed_on)  # fmt: skip
    seed_store(settings, [*sample_items(sample_days), hostile])
    with running(settings, Clock()):
        yield settings


def local_only(route: Any) -> None:
    """Tests never reach the internet: only the server under test on 127.0.0.1 is allowed."""
    if urlparse(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


def new_page(browser: Any, javascript: bool = True) -> tuple[Any, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=javascript)
    page = context.new_page()
    page.route("**/*", local_only)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: problems.append(f"a dialog opened: {dialog.message}"))
    return page, problems


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls sideways at {width} px"
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def stored(site: Settings, email: str) -> Subscriber | None:
    with open_backend(site.store.url, site.data_dir, write=False) as store:
        return store.subscriber(email)


def test_subscribe_confirm_edit_pause_and_unsubscribe_in_a_browser(
    browser: Any, site: Settings, smtp: SmtpSink
) -> None:
    page, problems = new_page(browser)
    page.goto(site.public_url + "/")
    assert page.get_by_role("button", name="Preview matches").is_hidden(), "with JavaScript the preview is live"
    shoot(page, "01-front")

    page.get_by_label("Your email address").fill("ada@example.org")
    rules = page.get_by_label("Keyword rules, one per line")
    rules.press_sequentially("video diffusion", delay=15)
    # Waited for, not looked at once: a stall of the debounce's 300 ms mid-word shows a preview for
    # "video" first, and the one for the whole rule replaces it.
    playwright_api.expect(page.locator("#preview")).to_contain_text("<img src=x", timeout=20_000)
    assert page.locator("#preview mark").count() > 0
    assert page.locator("#preview img").count() == 0, "a title from the feed is text, never markup"
    shoot(page, "02-live-preview")

    rules.press("End")
    rules.press("Enter")
    rules.press_sequentially("***")
    page.get_by_text("Line 2, column 1").wait_for()
    rules.fill("video diffusion\ngaussian splatting")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    shoot(page, "03-check-inbox")

    [mail] = smtp.to("ada@example.org")
    page.goto(link_in(mail, "/confirm"))
    page.get_by_role("heading", name="Confirm your subscription").wait_for()
    assert stored(site, "ada@example.org") is None, "opening it is not enough"
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    shoot(page, "04-confirmed")
    person = stored(site, "ada@example.org")
    assert person is not None and person.active and person.rules == ("video diffusion", "gaussian splatting")

    page.get_by_role("link", name="Change rules or pause").click()
    page.get_by_role("heading", name="Your subscription").wait_for()
    page.get_by_label("Keyword rules, one per line").fill("4090\nreal-time")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("Your changes are saved.").wait_for()
    shoot(page, "05-manage")
    page.get_by_role("button", name="Pause digests").click()
    page.get_by_role("button", name="Resume digests").wait_for()
    person = stored(site, "ada@example.org")
    assert person is not None and not person.active and person.rules == ("4090", "real-time")
    page.get_by_role("button", name="Resume digests").click()
    page.get_by_role("button", name="Pause digests").wait_for()

    page.get_by_role("link", name="Unsubscribe").click()
    page.get_by_role("heading", name="Unsubscribe?").wait_for()
    shoot(page, "06-unsubscribe")
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    shoot(page, "07-unsubscribed")
    assert stored(site, "ada@example.org") is None
    assert problems == [], problems  # no CSP violation, no script error


def test_the_form_and_its_preview_work_without_javascript(browser: Any, site: Settings, smtp: SmtpSink) -> None:
    page, problems = new_page(browser, javascript=False)
    page.goto(site.public_url + "/")
    page.get_by_label("Keyword rules, one per line").fill("gaussian splatting")
    page.get_by_role("button", name="Preview matches").click()
    page.locator("#preview ol.papers li").first.wait_for()
    assert page.locator("#preview mark").count() > 0
    shoot(page, "08-preview-without-javascript")
    page.get_by_label("Your email address").fill("bob@example.org")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert len(smtp.to("bob@example.org")) == 1
    assert problems == [], problems
