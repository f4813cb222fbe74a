"""The rendered email as people will see it: headless chromium at phone and desktop widths, light and dark.

Screenshots go to ``test-artifacts/`` for a person to look at. The checks that can be automated are:
no horizontal overflow at 390 px, and axe-core's WCAG 2.1 A/AA rules (contrast ≥ 4.5:1 included)
in both colour schemes. The page is loaded with every network request refused, so a test never
reaches the internet and an email that needs a remote resource to look right shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from digest.mail.render import render_digest
from digest.models import Digest
from tests.email_fixtures import LINKS, hostile_digest, huge_digest, sample_digest

RECEIPT = "Checked Hugging Face Daily Papers, Nov 19–20: 92 papers · arXiv cs.CV+cs.LG: 104 papers · 2 feeds: 9 papers."

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTHS = (390, 1280)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"chromium is not installed at {CHROMIUM}"),
]

OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .map(e => e.outerHTML.slice(0, 120));
  return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5)};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def compact_digest() -> Digest:
    digest = sample_digest()
    digest.subscriber = replace(digest.subscriber, layout="compact")
    return digest


@pytest.fixture(scope="module")
def emails() -> dict[str, str]:
    return {
        "sample": render_digest(sample_digest(), LINKS, receipt=RECEIPT).html,
        "compact": render_digest(compact_digest(), LINKS, receipt=RECEIPT).html,
        "hostile": render_digest(hostile_digest(), LINKS).html,
        "huge": render_digest(huge_digest(), LINKS).html,
    }


def open_page(browser: Any, html: str, width: int, scheme: str = "light") -> Any:
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    blocked: list[str] = []

    def refuse(route: Any) -> None:
        blocked.append(route.request.url)
        route.abort()

    context.route("**/*", refuse)
    page = context.new_page()
    page.set_content(html, wait_until="load")
    page.blocked = blocked
    return page


def overflow(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(OVERFLOW_JS)
    return result


@pytest.mark.parametrize("name", ["sample", "compact", "hostile", "huge"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_and_no_horizontal_overflow_on_a_phone(
    browser: Any, emails: dict[str, str], name: str, scheme: str
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page = open_page(browser, emails[name], width, scheme)
        page.screenshot(path=str(ARTIFACTS / f"email-{name}-{scheme}-{width}.png"), full_page=name != "huge")
        found = overflow(page)
        assert found["scroll"] <= found["width"], f"{name} overflows at {width}px: {found}"
        assert found["wide"] == [], f"{name}: elements wider than {width}px: {found['wide']}"
        assert page.blocked == [], f"the email loaded remote resources: {page.blocked}"
        page.context.close()


def test_the_overflow_check_catches_a_wide_layout(browser: Any, emails: dict[str, str]) -> None:
    """The check above can fail: a fixed 600 px table in the email is caught at 390 px."""
    broken = emails["sample"].replace("<h1", '<table style="width:600px"><tr><td>wide</td></tr></table><h1', 1)
    page = open_page(browser, broken, 390)
    found = overflow(page)
    page.context.close()
    assert found["scroll"] > found["width"] or found["wide"]


def axe_violations(browser: Any, html: str, scheme: str) -> list[dict[str, Any]]:
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
    page = open_page(browser, html, 390, scheme)
    options = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
    results = axe_module.Axe().run(page, options=options)
    page.context.close()
    violations: list[dict[str, Any]] = results.response["violations"]
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['id']}: {v['help']} — {[n['target'] for n in v['nodes'][:3]]} {v['nodes'][0]['failureSummary'][:200]}"
        for v in violations
    )


@pytest.mark.parametrize("name", ["sample", "compact", "hostile"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessibility_and_contrast_in_the_browser(
    browser: Any, emails: dict[str, str], name: str, scheme: str
) -> None:
    violations = axe_violations(browser, emails[name], scheme)
    assert violations == [], describe(violations)


def test_the_contrast_check_catches_pale_text(browser: Any, emails: dict[str, str]) -> None:
    """The check above can fail: grey #999 on white (2.8:1) is reported."""
    pale = emails["sample"].replace("color:#57606a", "color:#999999")
    ids = {v["id"] for v in axe_violations(browser, pale, "light")}
    assert "color-contrast" in ids


def test_dark_mode_changes_the_colours(browser: Any, emails: dict[str, str]) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = open_page(browser, emails["sample"], 1280, scheme)
        colours[scheme] = page.evaluate(
            "() => [getComputedStyle(document.body).backgroundColor,"
            " getComputedStyle(document.querySelector('h1')).color]"
        )
        page.context.close()
    assert colours["light"] != colours["dark"]
    assert colours["dark"][0] == "rgb(13, 17, 23)"
