"""Every endpoint of the web front over real HTTP (uvicorn on 127.0.0.1), against a real TinyDB store
in a temp dir and a real aiosmtpd server that receives the confirmation emails."""

from __future__ import annotations

import html as htmllib
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from digest.models import Item, Subscriber
from digest.paths import LIMITS_FILE
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import is_postgres, open_backend
from digest.state.store import delivery_note, store_lock
from digest.state.subscriptions import MAX_RULES, MAX_RULES_CHARS, state_key
from digest.web import app as web
from digest.web.app import TokenRedactingFilter, WebLimits
from tests.servers import SmtpSink
from tests.web_support import (
    SECRET,
    TODAY,
    Clock,
    csrf_of,
    link_in,
    running,
    sample_items,
    seed_store,
    seeded_site,
    text_of,
)

ADA = "ada@example.org"


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


def signup(client: httpx.Client, email: str, rules: str, **extra: str) -> httpx.Response:
    token = csrf_of(client.get("/").text)
    return client.post("/subscribe", data={"csrf": token, "email": email, "rules": rules, **extra})


def stored(settings: Settings, email: str) -> Subscriber | None:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return store.subscriber(email)


def delivered(settings: Settings, email: str) -> set[str]:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return store.delivered_ids(email)


def confirm(client: httpx.Client, smtp: SmtpSink, email: str) -> httpx.Response:
    """Open the link of the latest email and press its Confirm button (when the page has one)."""
    page = client.get(link_in(smtp.to(email)[-1], "/confirm"))
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)"', page.text)
    if token is None:
        return page
    return client.post("/confirm", data={"csrf": csrf_of(page.text), "token": htmllib.unescape(token.group(1))})


def add_subscriber(settings: Settings, subscriber: Subscriber) -> None:
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(subscriber)


def without_csrf(page: str) -> str:
    return re.sub(r'name="csrf" value="[0-9a-f]+"', 'name="csrf" value=""', page)


def signer() -> Signer:
    return Signer(SECRET)


# -- the front page and its headers -----------------------------------------------------------------
def test_front_page_has_the_form_a_form_token_and_security_headers(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert '<form method="post" action="/subscribe"' in page.text
    assert 'name="email"' in page.text and 'name="rules"' in page.text
    assert csrf_of(page.text) and "set-cookie" not in page.headers, "a form token, no cookie"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "no inline script (CSP)"
    assert re.search(r"\son[a-z]+=", page.text) is None, "no inline event handlers"
    script = re.search(r'<script src="(/static/app\.js\?v=[0-9a-f]+)"', page.text)
    assert script and client.get(script.group(1)).status_code == 200


def test_healthz_is_still_served(client: httpx.Client) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


# -- sign-up and confirmation -----------------------------------------------------------------------
def test_signup_mails_a_confirm_link_and_the_link_activates(
    client: httpx.Client, smtp: SmtpSink, settings: Settings, clock: Clock
) -> None:
    answer = signup(client, "Ada@Example.org", "4090\n\n  video diffusion  \n4090\n")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert stored(settings, ADA) is None, "nothing is stored before the link is opened"

    [mail] = smtp.to(ADA)
    assert mail["Subject"] == "Confirm your paper digest subscription"
    assert mail["From"].addresses[0].addr_spec == "papers@digest.example.org"
    assert mail.get_content_type() == "multipart/alternative"
    assert "2 keyword rules" in text_of(mail) and "4090" not in text_of(mail), "the rules are shown on the site"
    link = link_in(mail, "/confirm")
    assert link.startswith(f"{settings.public_url}/confirm?token=")
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None and f'href="{link}"' in html_part.get_content()

    assert client.get(link).status_code == 200 and stored(settings, ADA) is None, "opening the link is not enough"
    done = confirm(client, smtp, ADA)
    assert done.status_code == 200 and "You are subscribed" in done.text
    person = stored(settings, ADA)
    assert person is not None
    assert person.rules == ("4090", "video diffusion") and person.active
    assert person.caught_up_to is None, "the first digest covers the look-back window"
    assert person.subscribed_at == clock.now
    manage = re.search(r'href="(/manage\?token=[^"]+)"', done.text)
    assert manage and client.get(htmllib.unescape(manage.group(1))).status_code == 200

    again = client.get(link)  # a second click, or a mail scanner that opened it first
    assert again.status_code == 200 and "You are subscribed" in again.text


def test_bad_address_and_bad_rules_are_shown_next_to_their_fields_and_nothing_is_sent(
    client: httpx.Client, smtp: SmtpSink
) -> None:
    answer = signup(client, "<b>not an address", "4090\n\n!!!\nok\n" + "x" * 600)
    assert answer.status_code == 400
    page = answer.text
    assert 'id="email-error"' in page and "not a valid email address" in page
    assert 'aria-invalid="true" aria-describedby="email-error"' in page
    assert "Line 3, column 1: expected a word with at least one letter or digit" in page
    assert "Line 5, column 501: rule is longer than 500 characters" in page
    assert "&lt;b&gt;not an address" in page and "<b>not an address" not in page, "input is kept, escaped"
    assert "4090\n\n!!!\nok" in page, "what was typed is kept"
    assert smtp.messages == []


def test_too_many_or_too_long_rules_are_refused_with_a_clear_message(client: httpx.Client, smtp: SmtpSink) -> None:
    many = signup(client, ADA, "\n".join(f"rule{n}" for n in range(MAX_RULES + 1)))
    assert many.status_code == 400 and f"the limit is {MAX_RULES}" in many.text
    long = signup(client, ADA, "word " * (MAX_RULES_CHARS // 5 + 1))
    assert long.status_code == 400 and f"the limit is {MAX_RULES_CHARS}" in long.text
    empty = signup(client, ADA, " \n \n")
    assert empty.status_code == 400 and "at least one rule" in empty.text
    assert smtp.messages == []


def test_an_oversized_body_gets_413_before_anything_parses_it(client: httpx.Client, smtp: SmtpSink) -> None:
    token = csrf_of(client.get("/").text)
    answer = client.post("/subscribe", data={"csrf": token, "email": ADA, "rules": "4090\n" * 20_000})
    assert answer.status_code == 413
    assert answer.headers["x-frame-options"] == "DENY"
    assert smtp.messages == []


def test_the_answer_is_the_same_for_known_and_unknown_addresses(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    add_subscriber(settings, Subscriber("known@example.org", ("gpu",), caught_up_to=date(2026, 11, 19)))
    known = signup(client, "known@example.org", "4090")
    unknown = signup(client, "stranger@example.org", "4090")
    assert known.status_code == unknown.status_code == 200
    assert without_csrf(known.text).replace("known@", "x@") == without_csrf(unknown.text).replace("stranger@", "x@")
    assert dict(known.headers).keys() == dict(unknown.headers).keys()

    # Only the mailbox owner sees the difference, and only the link changes the subscription.
    [to_known] = smtp.to("known@example.org")
    assert to_known["Subject"] == "Confirm the new rules of your paper digest"
    assert stored(settings, "known@example.org").rules == ("gpu",)  # type: ignore[union-attr]
    assert confirm(client, smtp, "known@example.org").status_code == 200
    person = stored(settings, "known@example.org")
    assert person is not None and person.rules == ("4090",)
    assert person.caught_up_to == date(2026, 11, 19), "an active subscriber keeps their place"


def test_a_stranger_is_never_mailed_twice_within_the_window(settings: Settings, smtp: SmtpSink, clock: Clock) -> None:
    with running(settings, clock) as client:
        first = signup(client, "victim@example.org", "4090")
        second = signup(client, "VICTIM@example.org", "gpu")
        assert first.status_code == second.status_code == 200
        assert without_csrf(first.text) == without_csrf(second.text), "no sign that a mail was held back"
        assert len(smtp.to("victim@example.org")) == 1

    clock.advance(minutes=30)
    with running(settings, clock) as restarted:  # the limit survives a restart of the service
        assert signup(restarted, "victim@example.org", "4090").status_code == 200
        assert len(smtp.to("victim@example.org")) == 1
        assert "victim" not in kept_limits(settings), "addresses are kept only as keyed hashes"

        clock.advance(minutes=31)
        assert signup(restarted, "victim@example.org", "4090").status_code == 200
        assert len(smtp.to("victim@example.org")) == 2


def kept_limits(settings: Settings) -> str:
    """What the sign-up limit keeps: ``web-limits.json`` on TinyDB, the ``signup_mails`` table on PostgreSQL."""
    if not is_postgres(settings.store.url):
        return (settings.data_dir / LIMITS_FILE).read_text()
    with psycopg.connect(settings.store.url) as connection:
        rows = connection.execute("SELECT key, sent::text FROM signup_mails").fetchall()
    assert rows, "the limit is kept in the database"
    return repr(rows)


def test_sign_ups_are_limited_per_client_ip(settings: Settings, smtp: SmtpSink, clock: Clock) -> None:
    with running(settings, clock, WebLimits(signups_per_ip=3)) as client:
        for n in range(3):
            assert signup(client, f"p{n}@example.org", "4090").status_code == 200
        refused = signup(client, "p3@example.org", "4090")
        assert refused.status_code == 429 and "Too many sign-ups" in refused.text
        assert 'value="p3@example.org"' in refused.text, "the entries are kept"
        assert len(smtp.messages) == 3 and smtp.to("p3@example.org") == []
        clock.advance(hours=1, seconds=1)
        assert signup(client, "p3@example.org", "4090").status_code == 200
        assert len(smtp.to("p3@example.org")) == 1


def test_a_failed_send_says_so_keeps_the_entries_and_does_not_spend_the_limit(
    client: httpx.Client, smtp: SmtpSink
) -> None:
    smtp.refuse_rcpt_for[ADA] = "451 4.3.0 try again later"
    failed = signup(client, ADA, "4090")
    assert failed.status_code == 503 and "could not send the confirmation email" in failed.text
    assert f'value="{ADA}"' in failed.text and ">4090</textarea>" in failed.text
    smtp.refuse_rcpt_for.clear()
    assert signup(client, ADA, "4090").status_code == 200
    assert len(smtp.to(ADA)) == 1


def test_a_form_without_a_valid_csrf_token_is_refused_and_keeps_the_entries(
    client: httpx.Client, smtp: SmtpSink, settings: Settings, clock: Clock
) -> None:
    client.get("/")
    missing = client.post("/subscribe", data={"email": ADA, "rules": "4090"})
    assert missing.status_code == 400 and "form had expired" in missing.text and f'value="{ADA}"' in missing.text
    forged = client.post("/subscribe", data={"csrf": "0" * 64, "email": ADA, "rules": "4090"})
    assert forged.status_code == 400
    with httpx.Client(base_url=settings.public_url) as other:  # a token another site fetched, posted from there
        stolen = other.post(
            "/subscribe",
            data={"csrf": csrf_of(client.get("/").text), "email": ADA, "rules": "4090"},
            headers={"origin": "http://evil.example", "sec-fetch-site": "cross-site"},
        )
        assert stolen.status_code == 400
    assert smtp.messages == []


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"), id="tampered"),
        pytest.param(lambda t: t[: len(t) // 2], id="truncated"),
        pytest.param(lambda t: "", id="missing"),
        pytest.param(lambda t: Signer(SECRET).sign("manage", ADA), id="other-purpose"),
        pytest.param(lambda t: Signer("another-secret").sign("confirm", ADA, r=["4090"], s="x"), id="other-key"),
    ],
)
def test_bad_confirm_links_change_nothing(
    client: httpx.Client, smtp: SmtpSink, settings: Settings, mangle: Any
) -> None:
    signup(client, ADA, "4090")
    token = link_in(smtp.to(ADA)[0], "/confirm").split("token=")[1]
    answer = client.get("/confirm", params={"token": mangle(token)})
    assert answer.status_code == 400 and "This link is not valid" in answer.text
    assert "Traceback" not in answer.text
    assert stored(settings, ADA) is None


def test_an_expired_confirm_link_says_so(client: httpx.Client, settings: Settings) -> None:
    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(datetime.now(UTC).timestamp()) - 8 * 24 * 3600

    serializer = URLSafeTimedSerializer(SECRET, salt="digest.confirm", signer=EightDaysAgo)
    old = serializer.dumps({"e": ADA, "r": ["4090"], "s": state_key(None)})
    answer = client.get("/confirm", params={"token": old})
    assert answer.status_code == 400 and "expired" in answer.text and "Sign up again" in answer.text
    assert stored(settings, ADA) is None


def test_an_old_confirm_link_cannot_undo_a_later_change(
    client: httpx.Client, smtp: SmtpSink, settings: Settings
) -> None:
    signup(client, ADA, "4090")
    assert confirm(client, smtp, ADA).status_code == 200
    manage_token = signer().sign("manage", ADA)
    page = client.get("/manage", params={"token": manage_token})
    paused = client.post("/manage", data={"csrf": csrf_of(page.text), "token": manage_token, "action": "pause"})
    assert paused.status_code == 200 and "Paused" in paused.text  # after the redirect
    replay = confirm(client, smtp, ADA)
    assert replay.status_code == 409 and "already used" in replay.text
    person = stored(settings, ADA)
    assert person is not None and not person.active


# -- manage -----------------------------------------------------------------------------------------
@pytest.fixture
def ada(settings: Settings) -> Subscriber:
    person = Subscriber(
        ADA, ("4090",), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC), caught_up_to=date(2026, 11, 19)
    )
    add_subscriber(settings, person)
    return person


def manage_form(client: httpx.Client, token: str) -> str:
    page = client.get("/manage", params={"token": token})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    return csrf_of(page.text)


def test_manage_edits_rules_and_keeps_everything_else(
    client: httpx.Client, settings: Settings, ada: Subscriber
) -> None:
    token = signer().sign("manage", ADA)
    page = client.get("/manage", params={"token": token})
    assert ">4090</textarea>" in page.text and "active" in page.text
    saved = client.post(
        "/manage",
        data={"csrf": csrf_of(page.text), "token": token, "action": "save", "rules": "gaussian splatting\nreal-time"},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"].startswith("/manage?token=")
    assert "Your changes are saved." in client.get(saved.headers["location"]).text
    assert stored(settings, ADA) == replace(ada, rules=("gaussian splatting", "real-time"))


def test_manage_shows_rule_errors_and_saves_nothing(client: httpx.Client, settings: Settings, ada: Subscriber) -> None:
    token = signer().sign("manage", ADA)
    answer = client.post(
        "/manage", data={"csrf": manage_form(client, token), "token": token, "action": "save", "rules": "gpu\n  ---"}
    )
    assert answer.status_code == 400 and "Line 2, column 1" in answer.text
    assert "gpu\n  ---</textarea>" in answer.text
    assert stored(settings, ADA) == ada


def test_a_nul_or_control_character_in_any_field_is_refused_never_a_500(
    client: httpx.Client, settings: Settings, ada: Subscriber, items: list[Item]
) -> None:
    """PostgreSQL's text and jsonb take no NUL: a form that let one through would fail there (a 500)
    where TinyDB stored it. Every field a visitor types, on both stores (both passes of the suite)."""
    nul = "gpu\x00diffusion"
    assert signup(client, "nul@example.org", nul).status_code == 400
    assert signup(client, "nul\x00@example.org", "gpu").status_code == 400
    assert stored(settings, "nul@example.org") is None
    token = signer().sign("manage", ADA)
    saved = client.post(
        "/manage", data={"csrf": manage_form(client, token), "token": token, "action": "save", "rules": nul}
    )
    assert saved.status_code == 400 and stored(settings, ADA) == ada
    assert client.post("/preview", data={"rules": nul}).status_code in (200, 400)
    vote = signer().sign("vote", ADA)
    for paper in ("\x00", items[0].id + "\x00", "a\x07b"):
        assert client.get("/vote", params={"token": vote, "p": paper, "v": "1"}).status_code == 400
    assert client.get("/vote", params={"token": vote, "p": items[0].id, "v": "1"}).status_code == 200


def test_pause_and_resume(client: httpx.Client, settings: Settings, ada: Subscriber) -> None:
    token = signer().sign("manage", ADA)
    client.post("/manage", data={"csrf": manage_form(client, token), "token": token, "action": "pause"})
    assert stored(settings, ADA) == replace(ada, active=False)
    page = client.get("/manage", params={"token": token})
    assert "paused" in page.text and 'value="resume"' in page.text
    client.post("/manage", data={"csrf": csrf_of(page.text), "token": token, "action": "resume"})
    assert stored(settings, ADA) == replace(ada, active=True, caught_up_to=None), "no backlog of the pause"


def test_manage_refuses_bad_tokens_missing_csrf_and_strangers(
    client: httpx.Client, settings: Settings, ada: Subscriber
) -> None:
    token = signer().sign("manage", ADA)
    csrf = manage_form(client, token)
    assert client.get("/manage", params={"token": token[:-2] + "xx"}).status_code == 400
    assert client.get("/manage", params={"token": signer().sign("unsubscribe", ADA)}).status_code == 400
    no_csrf = client.post("/manage", data={"token": token, "action": "pause"})
    assert no_csrf.status_code == 400 and "form had expired" in no_csrf.text
    tampered = client.post("/manage", data={"csrf": csrf, "token": token + "x", "action": "pause"})
    assert tampered.status_code == 400
    odd = client.post("/manage", data={"csrf": csrf, "token": token, "action": "delete-everything"})
    assert odd.status_code == 400
    assert stored(settings, ADA) == ada
    nobody = client.get("/manage", params={"token": signer().sign("manage", "nobody@example.org")})
    assert nobody.status_code == 404 and "Not subscribed" in nobody.text


@pytest.mark.tinydb_only("the store file's lock held by a cycle")
def test_a_write_while_a_cycle_holds_the_lock_answers_busy_and_loses_nothing(
    client: httpx.Client, settings: Settings, ada: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "LOCK_WAIT_SECONDS", 0.3)
    token = signer().sign("manage", ADA)
    csrf = manage_form(client, token)
    form = {"csrf": csrf, "token": token, "action": "save", "rules": "gpu"}
    with store_lock(settings.data_dir, wait_seconds=1):
        busy = client.post("/manage", data=form)
    assert busy.status_code == 503 and "try again" in busy.text and busy.headers["retry-after"] == "30"
    assert stored(settings, ADA) == ada
    assert client.post("/manage", data=form).status_code == 200
    assert stored(settings, ADA) == replace(ada, rules=("gpu",))


# -- unsubscribe ------------------------------------------------------------------------------------
def test_unsubscribe_page_has_one_button_that_unsubscribes(
    client: httpx.Client, settings: Settings, ada: Subscriber
) -> None:
    with open_backend(settings.store.url, settings.data_dir) as store:
        item = Item("2611.00001", "hf_papers", "t", "a", "u", TODAY)
        store.record_note(delivery_note(ADA, [item], "d"), datetime.now(UTC))
    token = signer().sign("unsubscribe", ADA)
    page = client.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200 and ADA in page.text
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None
    refused = client.post(htmllib.unescape(action.group(1)), data={})
    assert refused.status_code == 400 and stored(settings, ADA) == ada, "no CSRF token, no one-click body"
    done = client.post(htmllib.unescape(action.group(1)), data={"csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert stored(settings, ADA) is None
    assert delivered(settings, ADA) == {"2611.00001"}, "history is kept"
    again = client.get("/unsubscribe", params={"token": token})
    assert again.status_code == 200 and "not subscribed" in again.text


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_exactly_as_gmail_sends_it(
    settings: Settings, clock: Clock, ada: Subscriber, encoding: str
) -> None:
    """RFC 8058: a POST to the List-Unsubscribe URL, body ``List-Unsubscribe=One-Click``, no cookie."""
    url = f"{settings.public_url}/unsubscribe?token={signer().sign('unsubscribe', ADA)}"
    with running(settings, clock) as mail_provider:
        headers = {"User-Agent": "Mozilla/5.0 (compatible; GoogleImageProxy)"}
        if encoding == "urlencoded":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            answer = mail_provider.post(url, content=b"List-Unsubscribe=One-Click", headers=headers)
        else:
            answer = mail_provider.post(url, files={"List-Unsubscribe": (None, "One-Click")}, headers=headers)
        assert "digest_csrf" not in mail_provider.cookies
    assert answer.status_code == 200
    assert stored(settings, ADA) is None


def test_one_click_with_a_bad_token_changes_nothing(settings: Settings, clock: Clock, ada: Subscriber) -> None:
    with running(settings, clock) as mail_provider:
        for token in ["", signer().sign("manage", ADA), signer().sign("unsubscribe", ADA)[:-4]]:
            answer = mail_provider.post("/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 400
    assert stored(settings, ADA) == ada


# -- archived digests -------------------------------------------------------------------------------
def test_an_archived_digest_is_shown_to_the_holder_of_its_link(client: httpx.Client, settings: Settings) -> None:
    archive = settings.data_dir / "archive"
    archive.mkdir(parents=True)
    digest_id = "0123456789abcdef0123"
    (archive / f"{digest_id}.html").write_text("<html><body><h1>3 new papers for you</h1></body></html>")
    token = signer().sign("digest", ADA, d=digest_id)
    shown = client.get(f"/digest/{digest_id}", params={"token": token})
    assert shown.status_code == 200 and "3 new papers for you" in shown.text
    assert "script-src" not in shown.headers["content-security-policy"], "no script at all (default-src 'none')"
    assert shown.headers["x-frame-options"] == "DENY"

    other = signer().sign("digest", ADA, d="ffffffffffffffffffff")
    assert client.get(f"/digest/{digest_id}", params={"token": other}).status_code == 400
    assert client.get(f"/digest/{digest_id}", params={"token": signer().sign("manage", ADA)}).status_code == 400
    assert client.get(f"/digest/{digest_id}").status_code == 400
    gone = "ffffffffffffffffffff"
    assert client.get(f"/digest/{gone}", params={"token": other}).status_code == 404
    sneaky = "..%2Fsecret_key"
    answer = client.get(f"/digest/{sneaky}", params={"token": signer().sign("digest", ADA, d="../secret_key")})
    assert answer.status_code in (400, 404) and SECRET not in answer.text


# -- live preview -----------------------------------------------------------------------------------
def expected_titles(items: list[Item], pattern: str) -> set[str]:
    regex = re.compile(pattern, re.I)
    return {i.title for i in items if regex.search(i.title + " " + i.abstract)}


def titles_in(fragment: str) -> set[str]:
    found = re.findall(r'<a class="title"[^>]*>(.*?)</a>', fragment, re.S)
    return {htmllib.unescape(re.sub(r"</?mark>", "", t)) for t in found}


def test_live_preview_lists_the_matching_papers_of_the_last_days_with_highlights(
    client: httpx.Client, items: list[Item]
) -> None:
    answer = client.post("/preview", data={"rules": "video diffusion"})
    assert answer.status_code == 200
    want = expected_titles(items, r"(?<![a-z])video[^a-z0-9]+diffusions?(?![a-z])")
    assert want and titles_in(answer.text) == want
    unique = len({i.id for i in items})  # some papers are listed on both days
    assert f"{len(want)} of {unique} papers from the last 7 days match" in answer.text
    assert re.search(r"<mark>video[\s-]diffusion</mark>", answer.text, re.I)


def test_preview_shows_rule_errors_and_still_matches_the_good_rules(client: httpx.Client, items: list[Item]) -> None:
    answer = client.post("/preview", data={"rules": "4090\n***"})
    assert "Line 2, column 1" in answer.text
    assert titles_in(answer.text) == expected_titles(items, r"(?<![0-9])4090(?![0-9])")


def test_preview_escapes_feed_text_and_skips_papers_older_than_a_week(client: httpx.Client, settings: Settings) -> None:
    hostile = Item("2611.99001", "hf_papers", "<img src=x onerror=alert(1)> zebrafish", "", "https://e/1", TODAY)
    old = Item("2611.99002", "hf_papers", "An old zebrafish paper", "", "https://e/2", date(2026, 11, 13))
    seed_store(settings, [hostile, old])
    answer = client.post("/preview", data={"rules": "zebrafish"})
    assert "<img" not in answer.text and "&lt;img src=x onerror=alert(1)&gt;" in answer.text
    assert "old zebrafish" not in answer.text and "1 of" in answer.text


def test_preview_works_without_javascript_through_the_form(
    client: httpx.Client, smtp: SmtpSink, items: list[Item]
) -> None:
    answer = client.post("/subscribe", data={"email": "", "rules": "gaussian splatting", "action": "preview"})
    assert answer.status_code == 200 and '<form method="post" action="/subscribe"' in answer.text
    assert titles_in(answer.text) == expected_titles(items, r"gaussian[^a-z0-9]+splatting")
    assert smtp.messages == []


def test_preview_is_rate_limited_per_client(settings: Settings, clock: Clock) -> None:
    with running(settings, clock, WebLimits(previews_per_ip=2)) as client:
        assert client.post("/preview", data={"rules": "gpu"}).status_code == 200
        assert client.post("/preview", data={"rules": "gpu"}).status_code == 200
        assert client.post("/preview", data={"rules": "gpu"}).status_code == 429


# -- errors and logs --------------------------------------------------------------------------------
@pytest.mark.tinydb_only("a truncated digest.json")
def test_errors_are_plain_pages_without_stack_traces(client: httpx.Client, settings: Settings) -> None:
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert client.get("/subscribe").status_code == 405
    (settings.data_dir / "digest.json").write_text('{"truncated": ')
    crashed = client.get("/manage", params={"token": signer().sign("manage", ADA)})
    assert crashed.status_code == 500 and "Something went wrong" in crashed.text
    assert "Traceback" not in crashed.text and "digest.json" not in crashed.text
    assert (
        crashed.headers["x-frame-options"] == "DENY" and "frame-ancestors" in crashed.headers["content-security-policy"]
    )


def test_tokens_never_reach_the_access_log(client: httpx.Client) -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/manage?token=eyJlIjoiYWRhQGV4YW1wbGUub3JnIn0.abc&done=saved", "1.1", 200),
        None,
    )  # fmt: skip
    assert TokenRedactingFilter().filter(record)
    assert "eyJ" not in record.getMessage() and "token=[redacted]&done=saved" in record.getMessage()
    assert any(isinstance(f, TokenRedactingFilter) for f in logging.getLogger("uvicorn.access").filters)


def test_a_confirm_link_whose_rules_no_longer_parse_subscribes_nobody(client: httpx.Client, settings: Settings) -> None:
    token = signer().sign("confirm", ADA, r=["***"], s=state_key(None))  # e.g. after a change of the rule language
    answer = client.get("/confirm", params={"token": token})
    assert answer.status_code == 400 and "no longer work" in answer.text and "Line 1, column 1" in answer.text
    assert stored(settings, ADA) is None
