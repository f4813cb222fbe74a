"""Many one-click unsubscribes at once on two ``digest web`` replicas of one PostgreSQL database,
while two workers send the day's queue through a slow relay: every one is answered 200 (none
refused, none 503), the manage pages of the others answer meanwhile, and nobody is mailed after
their unsubscribe was answered (a worker holds the person's row while it sends, so an unsubscribe
waits for a send in progress, and a send after it finds nobody)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from digest.settings import Settings
from digest.signing import Signer
from digest.state.postgres.store import PostgresStore
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_roles_postgres import (  # noqa: F401 (fixtures)
    env,
    queue_cycle,
    received,
    replicas,
    settings,
    subscribe_all,
    workers,
)
from tests.web_support import SECRET

PEOPLE = [f"crowd{n:03d}@example.org" for n in range(60)]
STAYING, LEAVING = PEOPLE[::2], PEOPLE[1::2]  # every other one: a worker is sending to some leaver


async def one_clicks_and_pages(urls: list[str]) -> tuple[dict[str, tuple[int, float]], list[int]]:
    """Each leaver's one-click (status, when its answer came), alternating replicas, and the
    stayers' manage pages, all at once."""
    signer = Signer(SECRET)
    answered: dict[str, tuple[int, float]] = {}
    pages: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def leave(n: int, email: str) -> None:
            token = signer.sign("unsubscribe", email)
            response = await client.post(
                f"{urls[n % 2]}/unsubscribe",
                params={"token": token},
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            answered[email] = (response.status_code, time.monotonic())

        async def manage(n: int, email: str) -> None:
            response = await client.get(f"{urls[n % 2]}/manage", params={"token": signer.sign("manage", email)})
            pages.append(response.status_code)

        await asyncio.gather(
            *(leave(n, e) for n, e in enumerate(LEAVING)), *(manage(n, e) for n, e in enumerate(STAYING))
        )
    return answered, pages


def test_one_clicks_at_once_on_two_replicas_while_workers_send_are_all_answered_and_final(
    replicas: list[str],  # noqa: F811
    settings: Settings,  # noqa: F811
    smtp: SmtpSink,
) -> None:
    subscribe_all(settings.store.url, PEOPLE)
    assert queue_cycle(settings) == len(PEOPLE)
    named: list[tuple[str, float]] = []  # each RCPT TO, when the relay had it: a send under way
    leaver_in_flight = threading.Event()

    def slow_rcpt(address: str) -> None:
        """A relay slow to take a leaver: their one-click comes while their send is under way, and
        had it been answered before that send ends, it would be answered before this time is noted."""
        if address.lower() in LEAVING:
            leaver_in_flight.set()
            time.sleep(0.5)
        named.append((address.lower(), time.monotonic()))

    smtp.rcpt_hook = slow_rcpt
    sending = threading.Thread(target=workers, args=(settings, 2))
    sending.start()
    assert leaver_in_flight.wait(60), "the workers are sending to a leaver"
    answered, pages = asyncio.run(one_clicks_and_pages(replicas))
    sending.join(120)

    assert sorted(status for status, _ in answered.values()) == [200] * len(LEAVING), answered
    assert pages == [200] * len(STAYING), pages
    for email, (_, at) in answered.items():
        late = [when for who, when in named if who == email and when > at]
        assert not late, f"{email} was mailed after their unsubscribe was answered"
    got = received(smtp)
    assert all(got[email] == 1 for email in STAYING), got
    assert all(got[email] <= 1 for email in LEAVING), got
    assert any(got[email] == 0 for email in LEAVING), "some left before their digest went out"
    store = PostgresStore(settings.store.url)
    try:
        assert all(store.subscriber(email) is None for email in LEAVING)
    finally:
        store.close()
