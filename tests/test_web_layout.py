"""The layout a person picks on the sign-up form and the manage page, and the site's name on its pages.

The layout travels in the signed confirm link (a sign-up stores nothing), so these tests go the
whole way: form → email → link → Confirm → the stored subscriber → the digest they get.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from digest.models import Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.web.app import WebLimits
from tests.conftest import pass_store
from tests.servers import SmtpSink
from tests.web_support import SECRET, Clock, csrf_of, link_in, make_settings, running

ADA = "ada@example.org"


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink) -> Settings:
    base = make_settings(tmp_path / "data", smtp)
    return base.model_copy(update={"site_name": "Lab <papers>", "sender_name": "Lab bot"})


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with running(settings, Clock(), WebLimits(mails_per_address=5)) as browser:
        yield browser


def stored(settings: Settings, email: str) -> Subscriber | None:
    with pass_store(settings.data_dir, write=False) as store:
        return store.subscriber(email)


def checked_layout(page: str) -> str:
    found = re.findall(r'<input type="radio" name="layout" value="(\w+)" checked>', page)
    assert len(found) == 1, found
    return str(found[0])


def signup(client: httpx.Client, rules: str, **extra: str) -> httpx.Response:
    token = csrf_of(client.get("/").text)
    return client.post("/subscribe", data={"csrf": token, "email": ADA, "rules": rules, **extra})


def open_and_confirm(client: httpx.Client, smtp: SmtpSink) -> tuple[httpx.Response, httpx.Response]:
    page = client.get(link_in(smtp.to(ADA)[-1], "/confirm"))
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)"', page.text)
    assert token, page.text
    done = client.post("/confirm", data={"csrf": csrf_of(page.text), "token": htmllib.unescape(token.group(1))})
    return page, done


def test_the_form_offers_both_layouts_full_first(client: httpx.Client) -> None:
    page = client.get("/").text
    assert 'name="layout" value="full"' in page and 'name="layout" value="compact"' in page
    assert checked_layout(page) == "full"


def test_a_compact_signup_is_shown_on_the_confirm_page_and_stored(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    assert signup(client, "4090", layout="compact").status_code == 200
    assert stored(settings, ADA) is None, "nothing is stored before the click"
    page, done = open_and_confirm(client, smtp)
    assert "<strong>compact</strong> layout" in page.text
    assert done.status_code == 200
    person = stored(settings, ADA)
    assert person is not None and person.layout == "compact" and person.rules == ("4090",)


def test_a_forged_layout_value_is_neither_kept_nor_echoed(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    answer = signup(client, "4090", layout='"><script>alert(1)</script>')
    assert answer.status_code == 200 and "<script>alert" not in answer.text
    open_and_confirm(client, smtp)
    person = stored(settings, ADA)
    assert person is not None and person.layout == "full"


def test_a_signed_link_with_an_unknown_layout_is_refused(client: httpx.Client, settings: Settings) -> None:
    from digest.state.subscriptions import state_key

    token = Signer(SECRET).sign("confirm", ADA, r=["4090"], s=state_key(None), l="huge")
    answer = client.get("/confirm", params={"token": token})
    assert answer.status_code == 400 and stored(settings, ADA) is None


def test_a_layout_kept_when_the_form_is_shown_again_with_errors(client: httpx.Client, smtp: SmtpSink) -> None:
    answer = signup(client, "!!!", layout="compact")
    assert answer.status_code == 400 and checked_layout(answer.text) == "compact"
    assert smtp.messages == []


def test_a_subscriber_who_signs_up_again_with_the_same_rules_can_change_only_the_layout(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    with pass_store(settings.data_dir) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",), caught_up_to=date(2026, 11, 19)))
    signup(client, "4090", layout="compact")
    _, done = open_and_confirm(client, smtp)
    assert done.status_code == 200
    person = stored(settings, ADA)
    assert person is not None and person.layout == "compact"
    assert person.caught_up_to == date(2026, 11, 19), "an active subscriber keeps their place"
    again = client.get(link_in(smtp.to(ADA)[-1], "/confirm"))
    assert again.status_code == 200 and "You are subscribed" in again.text, "a second click: done, not 'used'"


def test_the_manage_page_shows_and_saves_the_layout(client: httpx.Client, settings: Settings) -> None:
    person = Subscriber(ADA, ("4090",), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC), layout="compact")
    with pass_store(settings.data_dir) as store:
        store.save_subscriber(person)
    token = Signer(SECRET).sign("manage", ADA)
    page = client.get("/manage", params={"token": token}).text
    assert checked_layout(page) == "compact"

    fields = {"csrf": csrf_of(page), "token": token, "action": "save", "rules": "4090\nvideo diffusion"}
    saved = client.post("/manage", data={**fields, "layout": "full"})
    assert saved.status_code == 200 and "Your changes are saved." in saved.text
    assert checked_layout(saved.text) == "full"
    assert stored(settings, ADA) == replace(person, rules=("4090", "video diffusion"), layout="full")

    # A save from a page without the choice (an old tab) keeps the layout as it is.
    with pass_store(settings.data_dir) as store:
        store.save_subscriber(replace(person, layout="compact"))
    fields["csrf"] = csrf_of(client.get("/manage", params={"token": token}).text)
    client.post("/manage", data=fields)
    kept = stored(settings, ADA)
    assert kept is not None and kept.layout == "compact"

    # Rule errors show the page again with the layout the person chose, and save nothing.
    fields["csrf"] = csrf_of(client.get("/manage", params={"token": token}).text)
    wrong = client.post("/manage", data={**fields, "rules": "!!!", "layout": "full"})
    assert wrong.status_code == 400 and checked_layout(wrong.text) == "full"
    unchanged = stored(settings, ADA)
    assert unchanged is not None and unchanged.layout == "compact"


def test_the_site_name_is_on_the_pages_and_in_the_confirmation_email(client: httpx.Client, smtp: SmtpSink) -> None:
    page = client.get("/").text
    assert "<title>Daily papers, matched to your keywords · Lab &lt;papers&gt;</title>" in page
    assert '<a href="/" class="brand">Lab &lt;papers&gt;</a>' in page
    assert "Lab <papers>" not in page, "escaped like any other value"
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and "Lab &lt;papers&gt;" in missing.text

    signup(client, "4090")
    [mail] = smtp.to(ADA)
    assert mail["From"].addresses[0].display_name == "Lab bot"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None and "Lab <papers> · http" in body.get_content()
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None and "Lab &lt;papers&gt; · " in html_part.get_content()


def test_an_old_confirm_link_cannot_undo_a_later_layout_change(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    with pass_store(settings.data_dir) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",), caught_up_to=date(2026, 11, 19)))
    signup(client, "4090", layout="full")
    old_link = link_in(smtp.to(ADA)[-1], "/confirm")
    signup(client, "4090", layout="compact")
    open_and_confirm(client, smtp)
    stale = client.get(old_link)
    assert stale.status_code == 409, "the full-layout link was sent before the change to compact"
    person = stored(settings, ADA)
    assert person is not None and person.layout == "compact"
