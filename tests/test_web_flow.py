"""The whole life of a web subscriber, with every piece real: sign up over HTTP, confirm from the
email (aiosmtpd), a daily cycle against the local Daily Papers API, then every link of the digest
email — view online, manage, and the RFC 8058 one-click unsubscribe from its headers."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import httpx

from digest.cycle.run import run_once
from digest.settings import Settings
from digest.state.backend import open_backend
from tests.servers import FakeHfApi, SmtpSink
from tests.web_support import Clock, csrf_of, link_in, make_settings, running, text_of

AS_OF = date(2026, 11, 20)


def test_a_web_subscriber_gets_a_digest_whose_links_all_work(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> None:
    base = make_settings(tmp_path / "data", smtp)
    settings = Settings(**{**base.model_dump(), "sources": {"hf_papers": {"base_url": hf_api.base_url}}})
    with running(settings, Clock()) as browser:
        form = browser.get("/")
        answer = browser.post(
            "/subscribe", data={"csrf": csrf_of(form.text), "email": "ada@example.org", "rules": "video diffusion"}
        )
        assert answer.status_code == 200
        page = browser.get(link_in(smtp.to("ada@example.org")[0], "/confirm"))
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert page.status_code == 200 and token, "the link shows a Confirm button"
        pressed = browser.post("/confirm", data={"csrf": csrf_of(page.text), "token": token.group(1)})
        assert pressed.status_code == 200 and "You are subscribed" in pressed.text

        report = run_once(settings, as_of=AS_OF)
        assert report.sent == 1, report.summary()
        digest = smtp.to("ada@example.org")[-1]
        assert "video diffusion" in str(digest["Subject"])

        view = re.search(r"View online: (\S+/digest/([0-9a-f]{20})\?token=\S+)", text_of(digest))
        assert view and (settings.data_dir / "archive" / f"{view.group(2)}.html").is_file()
        online = browser.get(view.group(1))
        assert online.status_code == 200 and "new papers for you" in online.text

        manage = browser.get(link_in(digest, "/manage"))
        assert manage.status_code == 200 and "video diffusion</textarea>" in manage.text

        unsubscribe = re.fullmatch(r"<(.+)>", str(digest["List-Unsubscribe"]))
        assert unsubscribe and digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        one_click = httpx.post(
            unsubscribe.group(1),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        assert store.subscriber("ada@example.org") is None
        assert store.delivered_ids("ada@example.org"), "history is kept"
