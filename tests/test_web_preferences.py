"""The choices of issue 29 on the web, through the real app (uvicorn, aiosmtpd): the sign-up form,
the signed confirm link they travel in, the manage page; forged, oversized and replayed values;
and many saves at once."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from digest.models import Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import open_backend
from digest.state.preferences import Preferences
from digest.state.subscriptions import state_key
from digest.web.app import WebLimits
from tests.servers import SmtpSink
from tests.web_support import SECRET, Clock, csrf_of, link_in, make_settings, running

ADA = "ada@example.org"
WEEKLY = {
    "frequency": "weekly",
    "weekday": "fri",
    "hour": "7",
    "timezone": "Europe/Berlin",
    "max_papers": "10",
    "delivery": "feed",
    "layout": "compact",
}
WEEKLY_CHOSEN = Preferences("weekly", 4, "Europe/Berlin", 7, "compact", 10, False)


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink) -> Settings:
    """A site in Chicago's time, on this pass's store (TinyDB, or PostgreSQL with ``--store postgresql``)."""
    return in_chicago(make_settings(tmp_path / "data", smtp))


def in_chicago(base: Settings) -> Settings:
    return base.model_copy(update={"schedule": base.schedule.model_copy(update={"timezone": "America/Chicago"})})


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with running(settings, Clock(), WebLimits(mails_per_address=20, signups_per_ip=100)) as browser:
        yield browser


def stored(settings: Settings, email: str = ADA) -> Subscriber | None:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return store.subscriber(email)


def signup(client: httpx.Client, rules: str = "4090", **extra: str) -> httpx.Response:
    token = csrf_of(client.get("/").text)
    return client.post("/subscribe", data={"csrf": token, "email": ADA, "rules": rules, **extra})


def confirm(client: httpx.Client, link: str) -> tuple[httpx.Response, httpx.Response]:
    page = client.get(link)
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)"', page.text)
    assert token, page.text
    done = client.post("/confirm", data={"csrf": csrf_of(page.text), "token": htmllib.unescape(token.group(1))})
    return page, done


def field_value(page: str, name: str) -> str:
    found = re.search(rf'<input id="{name}" name="{name}"[^>]*value="([^"]*)"', page, re.S)
    assert found, name
    return htmllib.unescape(found.group(1))


def selected(page: str, name: str) -> str:
    block = re.search(rf'<select id="{name}" name="{name}">(.*?)</select>', page, re.S)
    assert block
    found = re.findall(r'<option value="([^"]*)" selected>', block.group(1))
    assert len(found) == 1, found
    return str(found[0])


def test_the_form_offers_the_choices_with_the_services_zone_ready_for_the_browsers(client: httpx.Client) -> None:
    page = client.get("/").text
    assert 'name="frequency" value="daily" checked' in page and 'name="delivery" value="email" checked' in page
    assert field_value(page, "timezone") == "America/Chicago" and 'data-prefill="browser"' in page
    assert selected(page, "hour") == "" and "The usual time (07:00 America/Chicago)" in page
    assert "/static/zone.js?v=" in page
    assert client.get(re.search(r'src="(/static/zone.js\?v=\w+)"', page).group(1)).status_code == 200  # type: ignore[union-attr]


def test_the_choices_travel_in_the_confirm_link_and_are_stored_on_confirm(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    assert signup(client, **WEEKLY).status_code == 200
    assert stored(settings) is None, "a sign-up stores nothing"
    page, done = confirm(client, link_in(smtp.to(ADA)[-1], "/confirm"))
    assert "weekly on Friday at 07:00 (Europe/Berlin) · compact · at most 10 papers in full · feed only" in page.text
    assert done.status_code == 200 and "You are subscribed" in done.text
    person = stored(settings)
    assert person is not None and Preferences.of(person) == WEEKLY_CHOSEN
    again = client.get(link_in(smtp.to(ADA)[-1], "/confirm"))
    assert again.status_code == 200 and "You are subscribed" in again.text, "a second click: done, not used"


def test_an_hour_with_a_blank_zone_is_in_the_services_zone(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    signup(client, hour="6", timezone="")
    confirm(client, link_in(smtp.to(ADA)[-1], "/confirm"))
    person = stored(settings)
    assert person is not None and (person.hour, person.timezone) == (6, "America/Chicago")


def test_a_link_sent_before_the_choices_existed_still_confirms(client: httpx.Client, settings: Settings) -> None:
    old = Signer(SECRET).sign("confirm", ADA, r=["4090"], s=state_key(None), l="compact", y=2)
    page = client.get("/confirm", params={"token": old})
    assert page.status_code == 200
    _, done = confirm(client, str(page.url))
    assert done.status_code == 200
    person = stored(settings)
    assert person is not None and Preferences.of(person) == Preferences(layout="compact")


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"timezone": "Europe/" + "x" * 10_000}, "Time zone 'Europe/xxxxxx"),
        ({"hour": "99"}, "Delivery time '99': use a whole hour from 0 to 23"),
        ({"frequency": "weekly", "weekday": "x"}, "Day of the weekly digest 'x': use a day of the week"),
        ({"frequency": "hourly"}, "How often 'hourly': choose daily or weekly"),
        ({"max_papers": "100000"}, "Papers in full per email '100000': use a number from 1 to 100"),
        ({"delivery": "<script>alert(1)</script>"}, "How you get them '<script>alert(1)</script>'"),
    ],
)
def test_a_forged_or_oversized_choice_is_refused_named_and_mails_nothing(
    client: httpx.Client, smtp: SmtpSink, fields: dict[str, str], said: str
) -> None:
    answer = signup(client, **fields)
    assert answer.status_code == 400
    assert said in htmllib.unescape(answer.text) and "<script>alert" not in answer.text
    assert "x" * 100 not in answer.text, "a 10 kB value is not echoed whole"
    assert smtp.messages == []


def test_a_confirm_link_with_changed_choices_is_refused(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    signup(client, **WEEKLY)
    link = link_in(smtp.to(ADA)[-1], "/confirm")
    token = link.split("token=", 1)[1]
    payload, _, rest = token.partition(".")
    forged = link.replace(token, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest)
    assert client.get(forged).status_code == 400
    resigned = Signer("another-secret").sign("confirm", ADA, r=["4090"], s=state_key(None), l="full", p={"hour": 3})
    assert client.get("/confirm", params={"token": resigned}).status_code == 400
    # Signed by us, but with a choice outside today's limits (a link from another version): malformed.
    odd = Signer(SECRET).sign("confirm", ADA, r=["4090"], s=state_key(None), l="full", p={"hour": 99}, y=2)
    assert client.get("/confirm", params={"token": odd}).status_code == 400
    assert stored(settings) is None


def test_an_older_link_cannot_undo_later_choices(client: httpx.Client, smtp: SmtpSink, settings: Settings) -> None:
    signup(client, **WEEKLY)
    weekly_link = link_in(smtp.to(ADA)[-1], "/confirm")
    signup(client, hour="5", timezone="Asia/Tokyo")
    confirm(client, link_in(smtp.to(ADA)[-1], "/confirm"))
    stale = client.get(weekly_link)
    assert stale.status_code == 409
    person = stored(settings)
    assert person is not None and (person.frequency, person.hour, person.timezone) == ("daily", 5, "Asia/Tokyo")
    # A change on the manage page also retires the link it was confirmed with.
    replay = link_in(smtp.to(ADA)[-1], "/confirm")
    token = Signer(SECRET).sign("manage", ADA)
    page = client.get("/manage", params={"token": token}).text
    fields = {"csrf": csrf_of(page), "token": token, "action": "save", "rules": "4090", "max_papers": "3"}
    assert client.post("/manage", data=fields).status_code == 200
    assert client.get(replay).status_code == 409
    after = stored(settings)
    assert after is not None and after.max_papers == 3 and after.hour == 5


def put(settings: Settings, person: Subscriber) -> None:
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(person)


def test_the_manage_page_shows_and_saves_the_choices(client: httpx.Client, settings: Settings) -> None:
    person = WEEKLY_CHOSEN.applied(Subscriber(ADA, ("4090",), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    put(settings, person)
    token = Signer(SECRET).sign("manage", ADA)
    page = client.get("/manage", params={"token": token}).text
    assert 'name="frequency" value="weekly" checked' in page and 'name="delivery" value="feed" checked' in page
    assert selected(page, "weekday") == "fri" and selected(page, "hour") == "7"
    assert field_value(page, "timezone") == "Europe/Berlin" and 'data-prefill="browser"' not in page
    assert field_value(page, "max_papers") == "10"

    fields = {"csrf": csrf_of(page), "token": token, "action": "save", "rules": "4090"}
    choices = {"frequency": "daily", "weekday": "fri", "hour": "", "timezone": "Europe/Berlin", "max_papers": ""}
    saved = client.post("/manage", data={**fields, **choices, "delivery": "email", "layout": "full"})
    assert saved.status_code == 200 and "Your changes are saved." in saved.text
    assert selected(saved.text, "hour") == "" and 'name="frequency" value="daily" checked' in saved.text
    assert stored(settings) == replace(
        person, frequency="daily", hour=None, max_papers=None, by_email=True, layout="full"
    )

    # A page from before the choices (an old tab) keeps them; bad ones save nothing and show what was typed.
    put(settings, person)
    assert client.post("/manage", data=fields).status_code == 200
    assert stored(settings) == person
    wrong = client.post("/manage", data={**fields, "hour": "99", "timezone": "Mars/Olympus", "max_papers": "7"})
    assert wrong.status_code == 400
    assert "Delivery time &#39;99&#39;" in wrong.text and "Time zone &#39;Mars/Olympus&#39;" in wrong.text
    assert field_value(wrong.text, "timezone") == "Mars/Olympus" and field_value(wrong.text, "max_papers") == "7"
    assert stored(settings) == person
    huge = client.post("/manage", data={**fields, "timezone": "x" * 10_000})
    assert huge.status_code == 400 and "x" * 100 not in huge.text and stored(settings) == person


def test_many_saves_at_once_lose_nothing(client: httpx.Client, settings: Settings) -> None:
    people = [f"p{n}@example.org" for n in range(12)]
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscribers(Subscriber(email, ("4090",)) for email in people)
    csrf = csrf_of(client.get("/").text)

    def save(n: int) -> int:
        email = people[n % len(people)]
        fields = {
            "csrf": csrf,
            "token": Signer(SECRET).sign("manage", email),
            "action": "save",
            "rules": f"rule{n}",
            "hour": str(n % 24),
            "timezone": "Europe/Berlin",
            "max_papers": str(n + 1),
        }
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            return own.post("/manage", data=fields).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(save, range(36)))
    assert codes == [303] * 36
    for index, email in enumerate(people):
        person = stored(settings, email)
        assert person is not None
        n = person.max_papers - 1 if person.max_papers else -1
        assert n % len(people) == index and person.rules == (f"rule{n}",) and person.hour == n % 24, "each save whole"
