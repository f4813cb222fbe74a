"""The web front used as an attacker or a hostile mail system would (issue 22), over real HTTP.

Each test is one attack that used to work: a link scanner confirming a sign-up, an old confirm
link undoing an unsubscribe, a forged ``X-Forwarded-For`` resetting the per-IP limit, the rules
field as a way to mail any text from the operator's domain, Gmail spellings of one inbox, a
browser without cookies, a cross-site form, a slash redirect to the ``Host`` header's site,
``/healthz`` details for everyone. The app runs in uvicorn on 127.0.0.1 — as the tests of
``test_web.py`` do, or exactly as ``digest serve`` starts it (:func:`digest.ops.service.start_web`), or
as a real ``digest serve`` process — with a real store and a real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import asyncio
import gc
import html as htmllib
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Headers

from digest.models import Item, Subscriber
from digest.ops.service import start_web
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import is_postgres, open_backend
from digest.state.store import Store, open_store, store_lock
from digest.state.subscriptions import mailbox_key
from digest.web import app as web
from digest.web import health
from digest.web.app import FORM_CROSS_SITE, WebLimits
from digest.web.health import SharedCall
from digest.web.security import client_address, cross_site, is_loopback, rate_key, trusted_networks
from tests.conftest import cli_env, pass_store, run_cli
from tests.servers import FakeHfApi, SmtpSink, free_port
from tests.test_reliability import start_cli, wait_for
from tests.web_support import (
    SECRET,
    Clock,
    csrf_of,
    link_in,
    live_server,
    make_settings,
    running,
    sample_items,
    seeded_site,
)

ADA = "ada@example.org"
EVIL = "http://evil.example"
FORM = re.compile(r'<form method="post" action="([^"]+)"')


@pytest.fixture
def items(sample_days: dict[str, list[dict[str, Any]]]) -> list[Item]:
    return sample_items(sample_days)


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink, items: list[Item]) -> Settings:
    """A site on this pass's store: TinyDB, or PostgreSQL on ``pytest --store postgresql``."""
    return seeded_site(tmp_path / "data", smtp, items)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[httpx.Client]:
    with running(settings, clock) as browser:
        yield browser


def signup(client: httpx.Client, email: str, rules: str, headers: dict[str, str] | None = None) -> httpx.Response:
    token = csrf_of(client.get("/").text)
    return client.post("/subscribe", data={"csrf": token, "email": email, "rules": rules}, headers=headers)


def stored(settings: Settings, email: str = ADA) -> Subscriber | None:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return store.subscriber(email)


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field in the page"
    return htmllib.unescape(found.group(1))


def confirm_form(page: str) -> dict[str, str]:
    """The fields the Confirm button posts."""
    assert FORM.search(page) and FORM.search(page).group(1) == "/confirm"  # type: ignore[union-attr]
    return {"csrf": hidden(page, "csrf"), "token": hidden(page, "token")}


def press_confirm(client: httpx.Client, page: str, **headers: str) -> httpx.Response:
    return client.post("/confirm", data=confirm_form(page), headers=headers)


def signed_up_and_confirmed(client: httpx.Client, smtp: SmtpSink, settings: Settings) -> str:
    """Sign up and press Confirm; return the confirm link of the email."""
    assert signup(client, ADA, "4090").status_code == 200
    link = link_in(smtp.to(ADA)[-1], "/confirm")
    assert press_confirm(client, client.get(link).text).status_code == 200
    person = stored(settings)
    assert person is not None and person.active
    return link


# -- mail scanners: a GET or HEAD of the confirm link changes nothing ------------------------------
def test_opening_the_confirm_link_changes_nothing_until_confirm_is_pressed(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    assert signup(client, ADA, "video diffusion\ngaussian splatting").status_code == 200
    link = link_in(smtp.to(ADA)[0], "/confirm")

    assert client.head(link).status_code == 200  # what Safe Links and friends do on delivery
    assert stored(settings) is None
    page = client.get(link)
    assert page.status_code == 200 and stored(settings) is None
    assert "2 keyword rules" in page.text
    assert "<code>video diffusion</code>" in page.text and "<code>gaussian splatting</code>" in page.text
    assert re.search(r"<button[^>]*>Confirm</button>", page.text)
    assert client.get(link).status_code == 200 and stored(settings) is None, "a second scan changes nothing"

    done = press_confirm(client, page.text)
    assert done.status_code == 200 and "You are subscribed" in done.text
    person = stored(settings)
    assert person is not None and person.active and person.rules == ("video diffusion", "gaussian splatting")
    again = press_confirm(client, page.text)  # a double click
    assert again.status_code == 200 and "You are subscribed" in again.text


def test_the_confirm_button_needs_its_form_and_this_site(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    signup(client, ADA, "4090")
    page = client.get(link_in(smtp.to(ADA)[0], "/confirm")).text
    fields = confirm_form(page)
    for refused in (
        client.post("/confirm", data={"token": fields["token"]}),  # a scanner that posts the bare link
        press_confirm(client, page, origin=EVIL),
        press_confirm(client, page, **{"sec-fetch-site": "cross-site"}),
    ):
        assert refused.status_code == 400
        assert re.search(r"<button[^>]*>Confirm</button>", refused.text), "the page to press it again"
    assert stored(settings) is None
    assert press_confirm(client, page, origin="null", **{"sec-fetch-site": "same-origin"}).status_code == 200
    assert stored(settings) is not None


# -- an old confirm link cannot undo an unsubscribe --------------------------------------------------
@pytest.mark.parametrize("how", ["page", "one-click", "cli"])
def test_an_old_confirm_link_is_dead_once_the_address_unsubscribed(
    client: httpx.Client, smtp: SmtpSink, settings: Settings, clock: Clock, how: str
) -> None:
    link = signed_up_and_confirmed(client, smtp, settings)
    old_page = client.get(link).text  # "You are subscribed" now; keep a Confirm form of that link:
    assert "You are subscribed" in old_page
    unsubscribe = f"/unsubscribe?token={Signer(SECRET).sign('unsubscribe', ADA)}"
    if how == "page":
        page = client.get(unsubscribe).text
        answer = client.post(htmllib.unescape(FORM.search(page).group(1)), data={"csrf": csrf_of(page)})  # type: ignore[union-attr]
        assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    elif how == "one-click":
        assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    else:
        result = run_cli("unsubscribe", ADA, env=cli_env(settings.data_dir, DIGEST_STORE__URL=settings.store.url))
        assert result.returncode == 0, result.stderr
    assert stored(settings) is None

    reopened = client.get(link)
    assert reopened.status_code == 409 and "no longer applies" in reopened.text
    assert not FORM.search(reopened.text)
    token = link.split("token=", 1)[1]
    pressed = client.post("/confirm", data={"csrf": csrf_of(client.get("/").text), "token": token})
    assert pressed.status_code == 409
    assert stored(settings) is None, "the old link did not subscribe the address again"

    clock.advance(hours=1, seconds=1)  # past the per-address limit
    signup(client, ADA, "gpu")  # signing up again works, with a new link
    assert len(smtp.to(ADA)) == 2
    fresh = client.get(link_in(smtp.to(ADA)[-1], "/confirm"))
    assert fresh.status_code == 200 and press_confirm(client, fresh.text).status_code == 200
    person = stored(settings)
    assert person is not None and person.rules == ("gpu",)


# -- the confirmation email carries no text from the form --------------------------------------------
def test_the_confirmation_email_carries_no_text_from_the_form(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    phishing = '"URGENT your mailbox is suspended - verify at https://evil.example" OR diffusion'
    assert signup(client, ADA, f"{phishing}\n4090").status_code == 200
    [mail] = smtp.to(ADA)
    raw = smtp.raw[0].decode("utf-8", "replace")
    for part in ("plain", "html"):
        body = mail.get_body(preferencelist=(part,))
        assert body is not None
        text = body.get_content()
        assert "2 keyword rules" in text, part
        assert "evil" not in text and "URGENT" not in text and "4090" not in text, part
    assert "evil" not in raw and "URGENT" not in raw
    page = client.get(link_in(mail, "/confirm"))
    assert "verify at https://evil.example" in htmllib.unescape(page.text), "the rules are shown on the site"
    assert '<a href="https://evil.example' not in page.text


# -- per-address limits count inboxes, not spellings --------------------------------------------------
def test_the_per_address_limit_counts_one_inbox_however_it_is_spelled(client: httpx.Client, smtp: SmtpSink) -> None:
    for spelling in ("john.doe@gmail.com", "JohnDoe+digest@googlemail.com", "j.o.h.n.d.o.e+x@Gmail.com"):
        assert signup(client, spelling, "4090").status_code == 200
    assert len(smtp.messages) == 1
    for other in ("ab@example.org", "a.b@example.org", "a.b+x@example.org"):  # dots matter outside Gmail
        assert signup(client, other, "4090").status_code == 200
    assert len(smtp.messages) == 3


# -- the sign-up answers with a redirect to a page that names the address ----------------------------
def test_the_sign_up_redirects_to_a_page_that_names_the_address(client: httpx.Client, smtp: SmtpSink) -> None:
    token = csrf_of(client.get("/").text)
    posted = client.post("/subscribe", data={"csrf": token, "email": ADA, "rules": "4090"}, follow_redirects=False)
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert location.startswith("/check-inbox?token=")
    assert "ada" not in location.lower() and "example.org" not in location, "no address in the URL"
    for _ in range(2):  # a reload is a GET of that page: nothing is sent again
        shown = client.get(location)
        assert shown.status_code == 200 and "Check your inbox" in shown.text and ADA in shown.text
    assert len(smtp.messages) == 1
    anonymous = client.get("/check-inbox", params={"token": "tampered"})
    assert anonymous.status_code == 200 and "Check your inbox" in anonymous.text and ADA not in anonymous.text


# -- no cookies needed; cross-site posts refused --------------------------------------------------
def test_a_browser_without_cookies_can_sign_up_and_unsubscribe(settings: Settings, smtp: SmtpSink) -> None:
    with running(settings, Clock()):
        base = settings.public_url
        front = httpx.get(base + "/")
        assert "set-cookie" not in front.headers
        answer = httpx.post(
            base + "/subscribe",
            data={"csrf": csrf_of(front.text), "email": ADA, "rules": "4090"},
            follow_redirects=True,
        )
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        assert len(smtp.to(ADA)) == 1

        page = httpx.get(link_in(smtp.to(ADA)[0], "/confirm"))
        assert httpx.post(base + "/confirm", data=confirm_form(page.text)).status_code == 200
        assert stored(settings) is not None

        url = f"{base}/unsubscribe?token={Signer(SECRET).sign('unsubscribe', ADA)}"
        page = httpx.get(url)
        done = httpx.post(url, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert stored(settings) is None


def test_a_form_posted_from_another_site_is_refused(client: httpx.Client, smtp: SmtpSink, settings: Settings) -> None:
    for headers in ({"origin": EVIL}, {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}):
        refused = signup(client, ADA, "4090", headers=headers)
        assert refused.status_code == 400 and htmllib.escape(FORM_CROSS_SITE, quote=False) in refused.text
        assert 'value="ada@example.org"' in refused.text, "the entries are kept"
    assert smtp.messages == []
    # Our own pages send "Origin: null" (Referrer-Policy: no-referrer); Sec-Fetch-Site says same-origin.
    ours = signup(client, ADA, "4090", headers={"origin": "null", "sec-fetch-site": "same-origin"})
    assert ours.status_code == 200 and len(smtp.messages) == 1

    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",)))
    manage = Signer(SECRET).sign("manage", ADA)
    page = client.get("/manage", params={"token": manage})
    paused = client.post(
        "/manage", data={"csrf": csrf_of(page.text), "token": manage, "action": "pause"}, headers={"origin": EVIL}
    )
    assert paused.status_code == 400 and stored(settings) == Subscriber(ADA, ("4090",))
    url = f"/unsubscribe?token={Signer(SECRET).sign('unsubscribe', ADA)}"
    page = client.get(url)
    gone = client.post(url, data={"csrf": csrf_of(page.text)}, headers={"sec-fetch-site": "cross-site"})
    assert gone.status_code == 400 and stored(settings) is not None


# -- every page that asks to try again has the button ----------------------------------------------
def try_again_pages(client: httpx.Client, smtp: SmtpSink, settings: Settings) -> tuple[str, str, str, str]:
    """Ada's confirm page, Bob's unsubscribe link and page, and Bob's manage token."""
    signup(client, ADA, "4090")
    confirm_page = client.get(link_in(smtp.to(ADA)[0], "/confirm")).text
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(Subscriber("bob@example.org", ("gpu",)))
    url = f"/unsubscribe?token={Signer(SECRET).sign('unsubscribe', 'bob@example.org')}"
    return confirm_page, url, client.get(url).text, Signer(SECRET).sign("manage", "bob@example.org")


def test_every_page_that_asks_to_try_again_has_its_button(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    _, url, _, _ = try_again_pages(client, smtp, settings)
    stale = client.post(url, data={"csrf": "0" * 48})
    assert stale.status_code == 400 and "again" in stale.text
    assert re.search(r"<button[^>]*>Unsubscribe</button>", stale.text), "“press it again” comes with the button"
    assert stored(settings, "bob@example.org") is not None, "a stale form changes nothing"


@pytest.mark.tinydb_only("holds digest.json's file lock as a cycle does; a PostgreSQL store has none for a page")
def test_a_page_busy_behind_the_held_store_asks_to_try_again_with_its_button(
    client: httpx.Client, smtp: SmtpSink, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    confirm_page, url, unsubscribe_page, manage = try_again_pages(client, smtp, settings)
    monkeypatch.setattr(web, "LOCK_WAIT_SECONDS", 0.2)
    with store_lock(settings.data_dir, wait_seconds=1):
        busy_confirm = press_confirm(client, confirm_page)
        busy_manage = client.post(
            "/manage", data={"csrf": csrf_of(unsubscribe_page), "token": manage, "action": "save", "rules": "tpu"}
        )
        busy_unsubscribe = client.post(url, data={"csrf": csrf_of(unsubscribe_page)})
    for answer, button in ((busy_confirm, "Confirm"), (busy_manage, "Save")):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
        assert "try again" in answer.text
        assert re.search(rf"<button[^>]*>{button}</button>", answer.text), button
    assert "tpu</textarea>" in busy_manage.text, "the entries are kept"
    assert stored(settings) is None
    # A person who asks to leave is never answered "busy": it is recorded beside the held store.
    assert busy_unsubscribe.status_code == 200 and "You are unsubscribed" in busy_unsubscribe.text
    assert stored(settings, "bob@example.org") is None


# -- a non-ASCII address: SMTPUTF8 when the server offers it, a form error when not ----------------
def test_a_non_ascii_address_is_mailed_with_smtputf8_when_the_server_offers_it(
    client: httpx.Client, smtp: SmtpSink
) -> None:
    answer = signup(client, "ü@example.com", "4090")
    assert answer.status_code == 200 and "Check your inbox" in answer.text and "ü@example.com" in answer.text
    assert smtp.envelopes == [("papers@digest.example.org", ["ü@example.com"])]


def test_a_non_ascii_address_gets_a_form_error_when_the_server_cannot_take_it(tmp_path: Path) -> None:
    sink = SmtpSink()
    sink.controller.SMTP_kwargs["enable_SMTPUTF8"] = False  # aiosmtpd's Controller offers it unless told not to
    sink.start()
    try:
        settings = make_settings(tmp_path / "data", sink)
        settings.data_dir.mkdir(parents=True)
        with running(settings, Clock()) as client:
            answer = signup(client, "ü@example.com", "4090")
            assert answer.status_code == 400
            assert 'id="email-error"' in answer.text and "Please use another address" in answer.text
            assert "Nothing you sent was lost" not in answer.text and 'value="ü@example.com"' in answer.text
            assert signup(client, "u@example.com", "4090").status_code == 200, "the form still works"
        assert [rcpt for _, rcpt in sink.envelopes] == [["u@example.com"]]
    finally:
        sink.stop()


# -- no redirect takes its host from the request ------------------------------------------------------
def raw_get(port: int, target: str, host: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_no_redirect_takes_its_host_from_the_request(client: httpx.Client, settings: Settings) -> None:
    port = int(settings.public_url.rsplit(":", 1)[1])
    for target in ("/manage/?token=secret-token", "/unsubscribe/?token=secret-token", "/confirm/?token=x"):
        answer = raw_get(port, target, "evil.example")
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert not head.startswith(b"http/1.1 3"), head
        assert b"evil.example" not in answer


# -- /healthz: details to loopback only -------------------------------------------------------------
@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The app exactly as ``digest serve`` runs it (``start_web``): real clock, real uvicorn config."""
    stop = threading.Event()
    server, thread = start_web(settings, stop)
    try:
        yield f"http://127.0.0.1:{settings.web.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        if is_postgres(settings.store.url):  # the app's own connections, closed as `digest web` closes them
            server.config.app.state.front.keeper.close()


def serve_settings(tmp_path: Path, smtp: SmtpSink | None, **web_settings: Any) -> Settings:
    port = free_port()
    base = make_settings(tmp_path / "data", smtp, public_url=f"http://127.0.0.1:{port}")
    return Settings(**{**base.model_dump(), "web": {"host": "127.0.0.1", "port": port, **web_settings}})


def test_healthz_gives_details_to_loopback_only(tmp_path: Path) -> None:
    with served(serve_settings(tmp_path / "direct", None)) as base:
        local = httpx.get(base + "/healthz")
        assert local.status_code == 200 and "last_cycle" in local.json() and "next_run" in local.json()
        # A loopback peer that forwards someone is a proxy on this host nobody listed: no details.
        forwarded = httpx.get(base + "/healthz", headers={"x-forwarded-for": "203.0.113.7"})
        assert forwarded.status_code == 200 and forwarded.json() == {"status": "ok"}
    with served(serve_settings(tmp_path / "proxied", None, trusted_proxies=["127.0.0.1"])) as base:
        public = httpx.get(base + "/healthz", headers={"x-forwarded-for": "203.0.113.7"})
        assert public.status_code == 200 and public.json() == {"status": "ok"}
        through_proxy_from_here = httpx.get(base + "/healthz", headers={"x-forwarded-for": "127.0.0.1"})
        assert "last_cycle" in through_proxy_from_here.json()


def test_a_flood_of_healthz_reads_the_store_one_at_a_time_and_keeps_no_answer(tmp_path: Path) -> None:
    """Anyone may ask ``/healthz``: a hundred at once must cost the store one read at a time (each
    was a read and a thread of its own), and no answer may be kept after its read: a request after
    a change, with no read under way, sees it."""
    lock, reading, most, reads = threading.Lock(), [0], [0], [0]
    now = datetime.now(UTC)  # a cycle that has just run: no scheduled time missed, whenever this runs
    last_cycle = [{"as_of": now.date().isoformat(), "started_at": now.isoformat(), "ok": True}]

    def slow_cycles() -> list[dict[str, Any]]:
        with lock:
            reading[0] += 1
            reads[0] += 1
            most[0] = max(most[0], reading[0])
        time.sleep(0.3)  # a store that is slow to answer
        with lock:
            reading[0] -= 1
        return list(last_cycle)

    settings = make_settings(tmp_path / "data", None)
    app = Starlette(routes=health.routes(settings, slow_cycles))
    with live_server(app) as base:
        # One client for all (a client each loads its CA bundle: 50 ms a time under CI's load,
        # which spread the arrivals over seconds); one at a time, a read each would be 100 reads.
        client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=100))
        with client, ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(lambda _: client.get(base + "/healthz"), range(100)))
        assert [a.status_code for a in answers] == [200] * 100
        assert all(a.json()["last_cycle"]["as_of"] == now.date().isoformat() for a in answers)
        assert most[0] == 1 and reads[0] <= 50, (most[0], reads[0])
        last_cycle[0] = {**last_cycle[0], "ok": False, "errors": ["smtp down"]}
        assert httpx.get(base + "/healthz", timeout=30).json()["status"] == "failing"


def test_a_healthz_asker_who_gives_up_does_not_cancel_the_others_answer() -> None:
    calls = [0]

    async def work() -> int:
        calls[0] += 1
        await asyncio.sleep(0.2)
        return 7

    async def scenario() -> None:
        shared = SharedCall(work)
        impatient = asyncio.ensure_future(shared())
        patient = asyncio.ensure_future(shared())
        await asyncio.sleep(0.05)
        impatient.cancel()
        assert await patient == 7 and calls[0] == 1
        assert await shared() == 7 and calls[0] == 2  # nothing kept once the call is over

    asyncio.run(scenario())


def test_a_healthz_read_that_fails_after_every_asker_gave_up_is_not_left_unretrieved() -> None:
    """asyncio reports a task whose exception nobody retrieved when it is collected: a read that
    fails after every asker went (a shutdown) must not leave one."""
    reported: list[dict[str, Any]] = []

    async def work() -> int:
        await asyncio.sleep(0.1)
        raise RuntimeError("the read failed")

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        shared = SharedCall(work)
        asker = asyncio.ensure_future(shared())
        await asyncio.sleep(0.02)
        asker.cancel()
        await asyncio.sleep(0.2)  # the read fails with nobody waiting
        shared.running = None
        gc.collect()

    asyncio.run(scenario())
    assert [c for c in reported if "never retrieved" in str(c.get("message"))] == []


# -- client IPs: X-Forwarded-For only from trusted proxies ------------------------------------------
@contextmanager
def visitor(base: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client that keeps cookies (as a browser does) and the form token of the front page."""
    with httpx.Client(base_url=base, timeout=60) as browser:
        yield browser, csrf_of(browser.get("/").text)


def signup_from(browser: httpx.Client, csrf: str, email: str, forwarded: str) -> int:
    """Sign up with an ``X-Forwarded-For``; 1 when the form was taken (a redirect), else the status."""
    answer = browser.post(
        "/subscribe",
        data={"csrf": csrf, "email": email, "rules": "4090"},
        headers={"x-forwarded-for": forwarded},
        follow_redirects=False,
    )
    return 1 if answer.status_code == 303 else answer.status_code


def test_a_forged_x_forwarded_for_does_not_reset_the_per_ip_limit(tmp_path: Path, smtp: SmtpSink) -> None:
    limit = WebLimits().signups_per_ip
    with served(serve_settings(tmp_path, smtp)) as base, visitor(base) as (browser, csrf):
        answers = [signup_from(browser, csrf, f"p{n}@example.org", f"198.51.100.{n}") for n in range(limit + 2)]
    assert len(smtp.messages) == limit, "one client, one limit, whatever it claims"
    assert answers == [1] * limit + [429, 429]


def test_behind_a_trusted_proxy_each_visitor_has_its_own_limit(tmp_path: Path, smtp: SmtpSink) -> None:
    limit = WebLimits().signups_per_ip
    proxied = serve_settings(tmp_path, smtp, trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"])
    with served(proxied) as base, visitor(base) as (browser, csrf):
        first = [signup_from(browser, csrf, f"a{n}@example.org", "198.51.100.1, 10.0.0.2") for n in range(limit + 1)]
        assert first == [1] * limit + [429]
        # The client may put anything in front; the proxy appends what it saw, and that is what counts.
        assert signup_from(browser, csrf, "b@example.org", "203.0.113.99, 198.51.100.1, 10.0.0.2") == 429
        assert signup_from(browser, csrf, "c@example.org", "198.51.100.2") == 1, "another visitor"
    assert len(smtp.messages) == limit + 1


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an IP address or a CIDR"):
        serve_settings(tmp_path, None, trusted_proxies=["proxy.example"])
    assert serve_settings(tmp_path, None, trusted_proxies="172.18.0.0/16, ::1").web.trusted_proxies == [
        "172.18.0.0/16",
        "::1",
    ]


# -- a real `digest serve` under concurrent load --------------------------------------------------
def test_digest_serve_answers_concurrent_unsubscribes_and_sign_ups(
    hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path
) -> None:
    people = [f"reader{n}@example.org" for n in range(20)]
    with pass_store(tmp_path / "data") as store:
        store.save_subscribers(Subscriber(p, ("zzzqqq nothing matches",)) for p in people)
    port = free_port()
    env = cli_env(
        tmp_path / "data",
        hf_api,
        smtp,
        DIGEST_SECRET_KEY=SECRET,
        DIGEST_PUBLIC_URL=f"http://127.0.0.1:{port}",
        DIGEST_WEB__PORT=str(port),
    )
    ran = run_cli("run", "--date", "2026-11-20", env=env)  # a recorded cycle: serve starts without catching up
    assert ran.returncode == 0, ran.stderr
    base = f"http://127.0.0.1:{port}"
    service = start_cli("serve", env=env)
    try:

        def up() -> bool:
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "digest serve to answer /healthz", timeout=60)
        signer = Signer(SECRET)

        def one_click(person: str) -> int:
            url = f"{base}/unsubscribe?token={signer.sign('unsubscribe', person)}"
            return httpx.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=60).status_code

        def sign_up(n: int) -> int:
            return signup_from(browser, csrf, f"new{n}@example.org", f"203.0.113.{n}")

        with visitor(base) as (browser, csrf), ThreadPoolExecutor(max_workers=40) as pool:
            unsubscribes = [pool.submit(one_click, p) for p in people]
            sign_ups = [pool.submit(sign_up, n) for n in range(20)]
            health = httpx.get(base + "/healthz", timeout=30)
            unsubscribed = [f.result() for f in unsubscribes]
            signed_up = [f.result() for f in sign_ups]
        assert health.status_code == 200
        assert unsubscribed == [200] * 20, unsubscribed
        assert sorted(signed_up) == [1] * 10 + [429] * 10, "one client, one limit, whatever it claims"
        assert len([m for m in smtp.messages if str(m["To"]).startswith("new")]) == 10
    finally:
        service.terminate()
        service.communicate(timeout=60)
    with pass_store(tmp_path / "data", write=False) as store:
        assert store.subscribers() == []


# -- the store remembers departures, through a crash too ---------------------------------------------
@pytest.mark.tinydb_only("a TinyDB store's journal through a crash (it opens digest.json in tmp_path itself)")
def test_a_departure_is_kept_through_a_crash_and_a_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("gpu",)))
        assert store.departed_at(ADA) is None
    crashed = Store(tmp_path)
    assert crashed.remove_subscriber("Ada@Example.org")
    left = crashed.departed_at(ADA)
    del crashed  # never flushed: as if killed here; the journal has it
    reopened = Store(tmp_path, writable=False)
    assert left is not None and reopened.departed_at(ADA) == left
    with open_store(tmp_path) as store:
        store.remove_subscriber(ADA)  # again, later (the CLI says "no subscriber" but it counts)
    again = Store(tmp_path, writable=False).departed_at(ADA)
    assert again is not None and again >= left


@pytest.mark.tinydb_only("snapshot reads of digest.json while a writer folds its journal")
def test_a_page_that_reads_the_store_while_another_request_writes_never_fails(tmp_path: Path) -> None:
    """Web pages read a snapshot without the lock; a writer folding the journal meanwhile used to make
    that read fail (FileNotFoundError, a 500) about once in a few hundred reads."""
    with open_store(tmp_path) as store:
        store.save_subscribers(Subscriber(f"p{n}@example.org", ("gpu",)) for n in range(20))
    stop = threading.Event()
    failures: list[str] = []
    reads = 0

    def write() -> None:
        n = 0
        while not stop.is_set():
            with open_store(tmp_path) as store:
                store.save_subscriber(Subscriber(f"p{n % 20}@example.org", ("gpu", str(n))))
            n += 1

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                Store(tmp_path, writable=False).subscriber("p1@example.org")
                reads += 1
            except Exception as exc:  # what a page would turn into a 500
                failures.append(repr(exc))

    threads = [threading.Thread(target=write), threading.Thread(target=read), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    stop.wait(3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert reads > 0 and failures == [], failures[:3]


# -- the pure decisions behind the above ----------------------------------------------------------
PROXIES = trusted_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.7", "1.2.3.4", "198.51.100.7"),  # not a proxy: its header is its own claim
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "6.6.6.6, 203.0.113.5", "203.0.113.5"),  # what the client put in front is never read
        ("127.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),  # a chain of trusted proxies
        ("127.0.0.1", "10.1.2.3, 10.0.0.9", "10.1.2.3"),  # all trusted: the first hop
        ("127.0.0.1", "garbage", "127.0.0.1"),
        ("127.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
        ("fd00::2", "::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_client_address_reads_x_forwarded_for_only_from_trusted_proxies(peer: str, forwarded: str, client: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == client
    assert client_address(peer, forwarded, ()) == peer


def test_ipv6_clients_share_a_limit_per_64_and_loopback_is_recognised() -> None:
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert rate_key("203.0.113.5") == "203.0.113.5"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("203.0.113.5")


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),  # no browser headers: the form token decides
        ({"sec-fetch-site": "same-origin", "origin": "null"}, False),
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site", "origin": "https://other.digest.example.org"}, True),
        ({"origin": "https://digest.example.org"}, False),
        ({"origin": "http://127.0.0.1:8080", "host": "127.0.0.1:8080"}, False),  # reached by another name
        ({"origin": EVIL, "host": "digest.example.org"}, True),
        ({"origin": "null"}, False),
    ],
)
def test_cross_site_posts_are_told_by_the_browser_headers(headers: dict[str, str], refused: bool) -> None:
    assert cross_site(Headers(headers), "https://digest.example.org") is refused


def test_mailbox_key_folds_the_spellings_of_one_inbox() -> None:
    assert mailbox_key("J.Doe+news@GoogleMail.com") == mailbox_key("jdoe@gmail.com") == "jdoe@gmail.com"
    assert mailbox_key("A.B+x@Example.org") == "a.b@example.org" != mailbox_key("ab@example.org")
