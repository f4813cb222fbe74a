""" "See the full digest online" for someone with a cap on papers per email (``max_papers``): the
archived page is the digest rendered without the cap, every paper in full as for anyone else;
the email itself keeps to the cap. A real cycle against the local Daily Papers API and SMTP sink."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from digest.cycle.compose import Composer
from digest.cycle.run import cycle_config, run_once
from digest.models import Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import open_backend
from tests.email_fixtures import sample_digest
from tests.servers import FakeHfApi, SmtpSink
from tests.web_support import Clock, make_settings, running, text_of

AS_OF = date(2026, 11, 20)
RULES = ("video diffusion", "4090", "gaussian splatting", "real-time")  # a day under the size limit
CAPPED, WHOLE = "capped@example.org", "whole@example.org"


def html_of(message: object) -> str:
    for part in message.walk():  # type: ignore[attr-defined]
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError("no HTML part")


def in_full(html: str) -> int:
    """Papers shown in full: each has its own heading, a linked title (the overflow's has no link)."""
    return len(re.findall(r"<h2\b[^>]*><a\b", html))


def test_the_online_page_of_a_capped_digest_has_every_paper_in_full(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    base = make_settings(tmp_path / "data", smtp)
    settings = Settings(**{**base.model_dump(), "sources": {"hf_papers": {"base_url": hf_api.base_url}}})
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscribers([Subscriber(CAPPED, RULES, max_papers=3), Subscriber(WHOLE, RULES)])
    report = run_once(settings, as_of=AS_OF)
    assert report.sent == 2, report.summary()
    pages: dict[str, tuple[str, str]] = {}
    with running(settings, Clock()) as browser:
        for email in (CAPPED, WHOLE):
            message = smtp.to(email)[-1]
            view = re.search(r"View online: (\S+/digest/[0-9a-f]{20}\?token=\S+)", text_of(message))
            assert view is not None
            online = browser.get(view.group(1))
            assert online.status_code == 200
            pages[email] = (html_of(message), online.text)
    capped_email, capped_online = pages[CAPPED]
    whole_email, whole_online = pages[WHOLE]
    assert in_full(capped_email) == 3 and "by title" in capped_email, "the email keeps to the cap"
    assert in_full(whole_email) > 3 and "by title" not in whole_email
    assert in_full(capped_online) == in_full(whole_online) == in_full(whole_email), "online: every paper in full"
    assert "by title" not in capped_online


def test_only_a_cap_that_left_papers_out_costs_a_second_render(tmp_path: Path) -> None:
    digest = sample_digest()
    config = cycle_config(make_settings(tmp_path, None))
    composer = Composer(config, Signer(config.secret_key), lambda: datetime(2026, 11, 20, tzinfo=UTC))
    count = len(digest.entries)
    for cap in (None, count, count + 5):
        fitted = replace(digest, subscriber=replace(digest.subscriber, max_papers=cap))
        html, _ = composer.compose(fitted)
        assert composer.online_page(fitted, html) is html, cap
    capped = replace(digest, subscriber=replace(digest.subscriber, max_papers=1))
    html, _ = composer.compose(capped)
    uncapped, _ = composer.compose(replace(digest, subscriber=replace(digest.subscriber, max_papers=None)))
    page = composer.online_page(capped, html)
    assert in_full(html.decode()) == 1 and in_full(page.decode()) == in_full(uncapped.decode()) == count
