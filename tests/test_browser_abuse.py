"""Issue 22 in a real browser (Playwright driving Debian's chromium against uvicorn on 127.0.0.1):
a browser that refuses cookies signs up, confirms and unsubscribes; opening the confirm link is not
enough, only its Confirm button subscribes; reloading the check-inbox page sends nothing again; a
form another site makes the browser post is refused (with the real ``Origin``/``Sec-Fetch-Site``
headers chromium sends, and our own forms' ``Origin: null`` from ``Referrer-Policy: no-referrer``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import open_backend
from tests.servers import SmtpSink
from tests.test_browser_web import CHROMIUM, shoot
from tests.web_support import SECRET, Clock, csrf_of, link_in, make_settings, running, sample_items, seed_store

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="chromium is not installed (Debian: apt-get install -y chromium); browser tests need it",
    ),
]

ADA = "ada@example.org"
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium as ``test_browser_web`` launches it."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path, smtp: SmtpSink, sample_days: dict[str, list[dict[str, Any]]]) -> Iterator[Settings]:
    settings = make_settings(tmp_path / "data", smtp)
    seed_store(settings, sample_items(sample_days))
    with running(settings, Clock()):
        yield settings


def cookieless_page(browser: Any) -> tuple[Any, Any, list[str]]:
    """A page whose browser never gets a cookie: every ``Set-Cookie`` is taken out of the responses
    (as with cookies blocked), and nothing but 127.0.0.1 is reachable."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def without_cookies(route: Any) -> None:
        if urlparse(route.request.url).hostname != "127.0.0.1":
            route.abort()
            return
        context.clear_cookies()  # route.fetch() shares the context's cookie jar: keep it empty
        response = route.fetch(max_redirects=0)  # the browser follows redirects itself
        context.clear_cookies()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "set-cookie"}
        route.fulfill(response=response, headers=headers)

    page.route("**/*", without_cookies)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return context, page, problems


def stored(site: Settings) -> Any:
    with open_backend(site.store.url, site.data_dir, write=False) as store:
        return store.subscriber(ADA)


def test_a_browser_without_cookies_signs_up_confirms_and_unsubscribes(
    browser: Any, site: Settings, smtp: SmtpSink
) -> None:
    context, page, problems = cookieless_page(browser)
    page.goto(site.public_url + "/")
    page.get_by_label("Your email address").fill(ADA)
    page.get_by_label("Keyword rules, one per line").fill("video diffusion\ngaussian splatting")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert ADA in page.locator("main").inner_text(), "the page repeats the address"
    assert urlparse(page.url).path == "/check-inbox"
    reloaded = page.reload()
    assert reloaded is not None and reloaded.request.method == "GET", "a reload does not post the form again"
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert len(smtp.to(ADA)) == 1

    page.goto(link_in(smtp.to(ADA)[0], "/confirm"))
    page.get_by_role("heading", name="Confirm your subscription").wait_for()
    assert "video diffusion" in page.locator("ul.rules").inner_text()
    assert stored(site) is None, "opening the link subscribes nobody"
    shoot(page, "20-confirm-button")
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    person = stored(site)
    assert person is not None and person.active and person.rules == ("video diffusion", "gaussian splatting")

    page.goto(f"{site.public_url}/unsubscribe?token={Signer(SECRET).sign('unsubscribe', ADA)}")
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    assert stored(site) is None
    assert context.cookies() == []
    assert problems == [], problems
    context.close()


def test_a_form_another_site_makes_the_browser_post_is_refused(browser: Any, site: Settings, smtp: SmtpSink) -> None:
    """The attacker fetched a valid form token (anyone can); the browser still says where the post comes from."""
    context = browser.new_context()
    page = context.new_page()
    csrf = csrf_of(page.request.get(site.public_url + "/").text())
    attack = (
        f'<form method="post" action="{site.public_url}/subscribe">'
        f'<input name="csrf" value="{csrf}"><input name="email" value="{ADA}"><input name="rules" value="4090">'
        '<button id="go">Win a prize</button></form>'
    )

    def routes(route: Any) -> None:
        host = urlparse(route.request.url).hostname
        if host == "evil.example":
            route.fulfill(status=200, content_type="text/html", body=attack)
        elif host == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    page.route("**/*", routes)
    page.goto(EVIL + "/")
    with page.expect_navigation():
        page.click("#go")
    assert re.search(r"sent from another site", page.content())
    assert smtp.messages == []
    context.close()
