"""The sign-up form's time zone in a real browser (chromium): the tiny script (static/zone.js) puts
the browser's own zone in the field, the form submits it, and the confirm link stores it; without
JavaScript the field keeps the service's zone and still works."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.settings import Settings
from digest.state.backend import open_backend
from tests.servers import SmtpSink
from tests.test_browser_web import local_only
from tests.web_support import Clock, link_in, make_settings, running

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

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
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path, smtp: SmtpSink) -> Iterator[Settings]:
    settings = make_settings(tmp_path / "data", smtp)
    with running(settings, Clock()):
        yield settings


def page_in(browser: Any, zone: str, javascript: bool = True) -> tuple[Any, list[str]]:
    context = browser.new_context(timezone_id=zone, java_script_enabled=javascript)
    page = context.new_page()
    page.route("**/*", local_only)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems


@pytest.mark.parametrize("javascript", [True, False])
def test_the_form_submits_the_browsers_time_zone(
    browser: Any, site: Settings, smtp: SmtpSink, javascript: bool
) -> None:
    page, problems = page_in(browser, "Asia/Tokyo", javascript)
    page.goto(site.public_url + "/")
    zone = page.locator("#timezone")
    expected = "Asia/Tokyo" if javascript else "UTC"  # without the script: the service's zone
    assert zone.input_value() == expected
    page.set_viewport_size({"width": 390, "height": 900})
    sideways = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(sideways) <= 0, "the choices fit a phone"
    page.get_by_label("Your email address").fill("ada@example.org")
    page.locator("#rules").fill("video diffusion")
    page.locator("input[name=frequency][value=weekly]").check()
    page.locator("#weekday").select_option("fri")
    page.locator("#hour").select_option("7")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()

    page.goto(link_in(smtp.to("ada@example.org")[-1], "/confirm"))
    page.get_by_text(f"weekly on Friday at 07:00 ({expected})").wait_for()
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    with open_backend(site.store.url, site.data_dir, write=False) as store:
        person = store.subscriber("ada@example.org")
    assert person is not None and (person.frequency, person.weekday, person.hour) == ("weekly", 4, 7)
    assert person.timezone == expected
    assert problems == []
