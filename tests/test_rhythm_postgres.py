"""Issue 29's features on a PostgreSQL store (issue 30), through the real processes and jobs:

- a real ``digest web`` process on a real PostgreSQL: sign-up and confirm with preferences, a
  manage-page save, votes pressed on ``/vote``, a suggested rule change accepted, and the Atom feed
  at the address ``digest feed-url`` prints;
- the hourly rhythm of ``digest scheduler``: :class:`digest.ops.service.CycleJob` with the queueing
  cycle of :mod:`digest.ops.roles` on a fake clock across Europe/Berlin's DST nights, a worker
  draining the queue after every hour into an SMTP sink: each person with their own hour gets one
  digest per local day, the ``schedule.cron`` cycle still serves the default people.
"""

from __future__ import annotations

import html as htmllib
import re
import threading
import zoneinfo
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.clock import cron_trigger, last_fire
from digest.cycle import run as cycle_run
from digest.cycle.queue import run_worker
from digest.cycle.run import cycle_config
from digest.mail.mailer import SmtpMailer
from digest.models import Item, Subscriber
from digest.ops import roles
from digest.ops.service import CycleJob
from digest.settings import Settings
from digest.signing import Signer
from digest.state.postgres.store import PostgresStore
from digest.state.preferences import Preferences
from tests.conftest import cli_env, run_cli
from tests.postgres_server import PostgresServer, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_feedback import accept_form
from tests.test_rhythm_service import CRON, PAPER, DailyPapers, every_day, local, paper
from tests.test_roles_postgres import replicas  # noqa: F401 (fixture: digest web processes)
from tests.test_web_preferences import WEEKLY, WEEKLY_CHOSEN, selected
from tests.web_support import SECRET, csrf_of, link_in, sample_items

ADA = "ada@example.org"


# -- the web front on PostgreSQL ------------------------------------------------------------------------
def press_vote(client: httpx.Client, paper_id: str, vote: int) -> None:
    token = Signer(SECRET).sign("vote", ADA, p=paper_id, v=vote)
    page = client.get("/vote", params={"token": token})
    assert page.status_code == 200, page.text
    assert client.post("/vote", data={"csrf": csrf_of(page.text), "token": token}).status_code == 200


def seed_todays_papers(url: str, sample_days: dict[str, list[dict[str, Any]]]) -> list[Item]:
    """The sample's papers, listed today: within the look-back window of a real process's clock."""
    today = datetime.now(UTC).date()
    items = [replace(item, listed_on=today) for item in sample_items(sample_days)]
    store = PostgresStore(url)
    store.upsert_items(items, datetime.now(UTC))
    store.close()
    return items


def test_preferences_votes_suggestions_and_the_feed_through_digest_web_on_postgresql(
    replicas: list[str],  # noqa: F811
    smtp: SmtpSink,
    postgres_url: str,  # noqa: F811
    sample_days: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    items = seed_todays_papers(postgres_url, sample_days)
    client = httpx.Client(base_url=replicas[0], timeout=30, follow_redirects=True)
    store = PostgresStore(postgres_url)

    # Sign up with every choice; they travel in the confirm link and are stored on confirm.
    form = {"csrf": csrf_of(client.get("/").text), "email": ADA, "rules": "real-time\n4090", **WEEKLY}
    assert client.post("/subscribe", data=form).status_code == 200
    page = client.get(link_in(smtp.to(ADA)[-1], "/confirm"))
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)"', page.text)
    assert token is not None
    done = client.post("/confirm", data={"csrf": csrf_of(page.text), "token": htmllib.unescape(token.group(1))})
    assert done.status_code == 200 and "You are subscribed" in done.text
    person = store.subscriber(ADA)
    assert person is not None and person.rules == ("real-time", "4090")
    assert Preferences.of(person) == WEEKLY_CHOSEN

    # The manage page saves a daily digest at 06:00 Berlin time, by email.
    manage = Signer(SECRET).sign("manage", ADA)
    shown = client.get("/manage", params={"token": manage}).text
    assert selected(shown, "weekday") == "fri"
    choices = {"frequency": "daily", "weekday": "fri", "hour": "6", "timezone": "Europe/Berlin", "max_papers": "5"}
    fields = {"csrf": csrf_of(shown), "token": manage, "action": "save", "rules": "real-time\n4090"}
    saved = client.post("/manage", data={**fields, **choices, "delivery": "email", "layout": "full"})
    assert saved.status_code == 200 and "Your changes are saved." in saved.text
    person = store.subscriber(ADA)
    assert person is not None
    assert Preferences.of(person) == Preferences("daily", 4, "Europe/Berlin", 6, "full", 5, True)

    # Votes go to the votes table; the suggestion they make is applied only when accepted.
    ids = {title: next(i.id for i in items if i.title.startswith(title)) for title in ("LLIA", "Live Avatar")}
    ids["LongLive"] = next(i.id for i in items if i.title.startswith("LongLive"))
    for title in ("LLIA", "Live Avatar"):
        press_vote(client, ids[title], -1)
    press_vote(client, ids["LongLive"], 1)
    assert store.votes(ADA) == {ids["LLIA"]: -1, ids["Live Avatar"]: -1, ids["LongLive"]: 1}
    suggested = client.get("/manage", params={"token": manage}).text
    accept = accept_form(suggested)
    assert (accept["rule"], accept["changed"]) == ("real-time", "real-time -avatar")
    assert client.post("/suggestion", data=accept).status_code == 200
    person = store.subscriber(ADA)
    assert person is not None and person.rules == ("real-time -avatar", "4090")

    # The feed, at the address the CLI prints for the same database.
    env = cli_env(tmp_path / "cli", DIGEST_STORE__URL=postgres_url, DIGEST_SECRET_KEY=SECRET)
    printed = run_cli("feed-url", ADA, env={**env, "DIGEST_PUBLIC_URL": replicas[0]})
    assert printed.returncode == 0, printed.stderr
    feed = client.get(printed.stdout.strip())
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    assert b"<feed" in feed.content and b"<entry>" in feed.content
    store.close()
    client.close()


# -- the hourly rhythm of digest scheduler on PostgreSQL -------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def scheduler_settings(postgres_url: str, smtp: SmtpSink, tmp_path: Path) -> Settings:  # noqa: F811
    return Settings(
        data_dir=tmp_path / "data",
        public_url="https://digest.example.org",
        store={"url": postgres_url},
        secret_key=SECRET,
        schedule={"cron": CRON, "timezone": "UTC"},
        smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "papers@example.org"},
        retry={"initial_delay_seconds": 0.05, "max_delay_seconds": 0.2, "send_budget_seconds": 1},
    )


def run_hours(
    settings: Settings, smtp: SmtpSink, clock: Clock, start: datetime, end: datetime
) -> list[tuple[datetime, str, list[str]]]:
    """Each hour: the cron job at its fire times and the tick (both queueing, as ``digest scheduler``'s),
    then a worker drains the queue; what reached the SMTP sink, by the hour it went out."""
    job = CycleJob(settings, threading.Event(), now=clock, sources=[DailyPapers()], cycle=roles.queueing_cycle)
    schedule = cron_trigger(CRON, "UTC")
    config, sent = cycle_config(settings), []
    clock.now = start
    while clock.now <= end:
        before = len(smtp.messages)
        if last_fire(schedule, clock.now) == clock.now:
            job()
        job.tick()
        run_worker(config, settings.store.url, SmtpMailer(settings.smtp), clock, threading.Event(), True)
        for message in smtp.messages[before:]:
            text = message.get_body(preferencelist=("plain",)).get_content()
            sent.append((clock.now, str(message["To"]), sorted(set(PAPER.findall(text)))))
        clock.now += timedelta(hours=1)
    return sent


NIGHTS = [
    (date(2026, 3, 29), "2026-03-29T03:00:00+02:00"),  # 02:00 does not exist: sent at 03:00
    (date(2026, 10, 25), "2026-10-25T02:00:00+02:00"),  # 02:00 twice: sent the first time only
]


@pytest.mark.parametrize(("night", "sent_that_night"), NIGHTS)
def test_the_scheduler_serves_each_hour_once_per_local_day_across_a_berlin_dst_night(
    scheduler_settings: Settings, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch, night: date, sent_that_night: str
) -> None:
    zone = "Europe/Berlin"
    clock = Clock()
    # The scheduler's own checks ("did a cycle run since the fire time?") and the cycle's report read
    # this clock too, as they read the real one in production.
    monkeypatch.setattr(roles, "utc_now", clock)
    monkeypatch.setattr(cycle_run, "utc_now", clock)
    start = datetime(night.year, night.month, night.day, 12, tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)
    start = start.replace(minute=0) - timedelta(days=2)
    end = start + timedelta(days=5)
    store = PostgresStore(scheduler_settings.store.url)
    store.save_subscribers(
        [
            Subscriber("night@example.org", ("gpu",), subscribed_at=start, timezone=zone, hour=2),
            Subscriber("default@example.org", ("gpu",), subscribed_at=start),  # schedule.cron, 07:00 UTC
            Subscriber("feed@example.org", ("gpu",), subscribed_at=start, by_email=False),
        ]
    )
    store.close()

    sent = run_hours(scheduler_settings, smtp, clock, start, end)

    night_sends = [local(at, zone) for at, to, _ in sent if to == "night@example.org"]
    per_day = Counter(at.date() for at in night_sends)
    days = every_day(local(start, zone).date() + timedelta(days=1), local(end, zone).date() - timedelta(days=1))
    assert all(per_day[d] == 1 for d in days) and set(per_day.values()) == {1}, per_day
    assert [at.isoformat() for at in night_sends if at.date() == night] == [sent_that_night]
    defaults = [at for at, to, _ in sent if to == "default@example.org"]
    assert defaults and [at.hour for at in defaults] == [7] * len(defaults)
    assert len(defaults) == len({at.date() for at in defaults}) == 5
    assert not [to for _, to, _ in sent if to == "feed@example.org"]
    for who in ("night@example.org", "default@example.org"):
        got = [pid for _, to, papers in sent if to == who for pid in papers]
        assert len(got) == len(set(got)), f"{who} got a paper twice"
        last = max(at for at, to, _ in sent if to == who).date()
        assert {paper(last).id, paper(last - timedelta(days=1)).id} <= set(got)
    store = PostgresStore(scheduler_settings.store.url)
    cycles = store.cycles(last=500)
    store.close()
    assert cycles and all(c["failed"] == 0 and c["ok"] for c in cycles)
    assert {c["trigger"] for c in cycles} == {"scheduled", "hourly"}
