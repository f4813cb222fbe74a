"""The confirmed page says when *this person's* first digest goes out: the first slot of their own
rhythm (weekly, their own hour, their time zone) in that zone, not the service's next run; and a
feed-only person is told there is no email. Through the real app (uvicorn) and its Confirm button."""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from digest.clock import cron_trigger
from digest.cycle.rhythm import Rhythm, first_due, next_slot
from digest.models import Subscriber
from digest.settings import Settings
from digest.signing import Signer
from digest.state.subscriptions import state_key
from tests.web_support import SECRET, Clock, csrf_of, make_settings, running

ADA = "ada@example.org"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # a Friday: 10:00 in Paris, 04:00 in New York, 18:00 in Tokyo


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = make_settings(tmp_path / "data", None)
    schedule = base.schedule.model_copy(update={"cron": "30 6 * * *", "timezone": "Europe/Paris"})
    return base.model_copy(update={"schedule": schedule})


def confirmed_text(client: httpx.Client, email: str, choices: dict[str, object]) -> str:
    """The page after pressing Confirm on a link that asks for ``choices``, as plain text."""
    token = Signer(SECRET).sign("confirm", email, r=["4090"], s=state_key(None), l="full", p=choices, y=2)
    page = client.get("/confirm", params={"token": token})
    done = client.post("/confirm", data={"csrf": csrf_of(page.text), "token": token})
    assert done.status_code == 200 and "You are subscribed" in done.text, done.text
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", done.text)).split())


CASES = [  # the choices, then what the page says of the first digest and of the rhythm after it
    pytest.param({}, "with the next daily run, Sat Nov 21 at 06:30 CET (Europe/Paris)", "", id="default"),
    pytest.param(
        {"hour": 7, "timezone": "Europe/Berlin"},
        "at your hour, Sat Nov 21 at 07:00 CET (Europe/Berlin)",
        "; then every day at 07:00",
        id="own-hour-tomorrow",
    ),
    pytest.param(
        {"hour": 11, "timezone": "America/New_York"},
        "at your hour, Fri Nov 20 at 11:00 EST (America/New_York)",
        "; then every day at 11:00",
        id="own-hour-later-today-in-their-zone",
    ),
    pytest.param(
        {"frequency": "weekly", "weekday": 0},
        "on your day, Mon Nov 23 at 06:30 CET (Europe/Paris)",
        "; then every Monday",
        id="weekly-on-schedule",
    ),
    pytest.param(
        {"frequency": "weekly", "weekday": 4, "hour": 18, "timezone": "Asia/Tokyo"},
        "on your day, Fri Nov 27 at 18:00 JST (Asia/Tokyo)",
        "; then every Friday at 18:00",
        id="weekly-its-hour-just-passed",
    ),
]


@pytest.mark.parametrize(("choices", "when", "then"), CASES)
def test_the_confirmed_page_names_the_persons_own_first_slot(
    settings: Settings, choices: dict[str, object], when: str, then: str
) -> None:
    with running(settings, Clock(NOW)) as client:
        text = confirmed_text(client, ADA, choices)
    days = settings.lookback_days
    assert f"Your first digest comes {when} , and covers the last {days} days{then}. No email" in text


def test_a_feed_only_person_is_told_there_is_no_email(settings: Settings) -> None:
    with running(settings, Clock(NOW)) as client:
        text = confirmed_text(client, ADA, {"by_email": False, "hour": 7, "timezone": "Europe/Berlin"})
    assert "You chose feed only : no email." in text and "first digest" not in text


def test_a_digest_already_had_that_day_moves_the_first_slot_to_the_next_day() -> None:
    """Someone who had today's digest at 07:00 and moves their hour to 23:00 gets the next one
    tomorrow, not tonight (one digest a local day): what their page must say too."""
    schedule = cron_trigger("30 6 * * *", "Europe/Paris")
    person = Subscriber(
        ADA,
        ("4090",),
        subscribed_at=datetime(2026, 11, 1, tzinfo=UTC),
        timezone="Europe/Berlin",
        hour=23,
        handled_at=datetime(2026, 11, 20, 6, 0, tzinfo=UTC),
    )
    tonight = next_slot(Rhythm.of(person), NOW, schedule)
    assert tonight == datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
    assert first_due(person, NOW, schedule) == datetime(2026, 11, 21, 22, 0, tzinfo=UTC)
