"""Votes ("more like this" / "not for me"): the links in the email, the votes table, the /vote pages,
the suggestions on the manage page and accepting one, and their abuse (forged, replayed, oversized,
floods, concurrency), over real HTTP against a real store."""

from __future__ import annotations

import html as htmllib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from digest.cycle.links import digest_links
from digest.mail.mime import html_part_size, seven_bit_html
from digest.mail.render import HTML_LIMIT_BYTES, render_digest
from digest.matching.explain import try_rule
from digest.matching.rules import parse_rule
from digest.models import Item, Subscriber
from digest.paths import JOURNAL_FILE
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import open_backend
from digest.state.departures import append_departure
from digest.state.shape import shape_problems
from digest.state.store import Store, open_store
from digest.web.app import WebLimits
from digest.web.suggestions import edited
from tests.conftest import cli_env, on_postgresql, pass_store, run_cli
from tests.email_fixtures import digest_for, real_day, sample_digest
from tests.web_support import SECRET, Clock, csrf_of, make_settings, running, sample_items, seed_store, text_of

ADA = "ada@example.org"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def items(sample_days: dict[str, list[dict[str, Any]]]) -> list[Item]:
    return sample_items(sample_days)


@pytest.fixture
def settings(tmp_path: Path, items: list[Item]) -> Settings:
    site = make_settings(tmp_path / "data", None)
    seed_store(site, items)
    with open_backend(site.store.url, site.data_dir) as store:
        store.save_subscriber(Subscriber(ADA, ("real-time", "4090"), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    return site


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with running(settings, Clock()) as browser:
        yield browser


def signer() -> Signer:
    return Signer(SECRET)


def vote_link(paper: str, vote: int, email: str = ADA) -> str:
    return "/vote?token=" + signer().sign("vote", email, p=paper, v=vote)


def press(client: httpx.Client, link: str, **headers: str) -> httpx.Response:
    """Open a vote link and press its button, as a person does."""
    page = client.get(link)
    assert page.status_code == 200, page.text
    query = {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}
    return client.post("/vote", data={**query, "csrf": csrf_of(page.text)}, headers=headers)


def votes(settings: Settings, email: str = ADA) -> dict[str, int]:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return store.votes(email)


def rules_of(settings: Settings, email: str = ADA) -> tuple[str, ...]:
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        person = store.subscriber(email)
    assert person is not None
    return person.rules


def paper_id(items: list[Item], title_start: str) -> str:
    (found,) = [item.id for item in items if item.title.startswith(title_start)]
    return found


def manage_link(email: str = ADA) -> str:
    return "/manage?token=" + signer().sign("manage", email)


# -- the store ---------------------------------------------------------------------------------------
@pytest.mark.tinydb_only("the votes in the TinyDB journal through a crash")
def test_the_latest_vote_is_kept_journalled_and_read_back_after_a_crash(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",)))
    crashed = Store(tmp_path)
    assert crashed.record_vote(ADA, "p1", -1, NOW)
    assert crashed.record_vote("Ada@Example.org", "p1", 1, NOW)
    assert crashed.record_vote(ADA, "p2", -1, NOW)
    del crashed  # never flushed: the journal holds the votes
    again = Store(tmp_path)
    assert again.votes(ADA) == {"p1": 1, "p2": -1}
    again.close()
    data = Store(tmp_path, writable=False)
    assert data.votes(ADA) == {"p1": 1, "p2": -1}
    assert shape_problems(json.loads((tmp_path / "digest.json").read_text())) == []


@pytest.mark.tinydb_only("the TinyDB journal's size")
def test_the_same_vote_again_writes_nothing_and_a_leaver_records_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",)))
        store.record_vote(ADA, "p1", -1, NOW)
        size = (tmp_path / JOURNAL_FILE).stat().st_size
        assert store.record_vote(ADA, "p1", -1, NOW)
        assert (tmp_path / JOURNAL_FILE).stat().st_size == size
        assert not store.record_vote("stranger@example.org", "p1", -1, NOW)
        assert not store.record_vote(ADA, "p1", 2, NOW)
        assert store.votes("stranger@example.org") == {}


def test_votes_are_deleted_with_the_person_who_leaves(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with pass_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",)))
        store.save_subscriber(Subscriber("bob@example.org", ("4090",)))
        store.record_vote(ADA, "p1", -1, NOW)
        store.record_vote("bob@example.org", "p1", 1, NOW)
        store.remove_subscriber(ADA)
        assert store.votes(ADA) == {} and not store.record_vote(ADA, "p2", -1, NOW)
    with pass_store(tmp_path, write=False) as store:
        assert store.votes(ADA) == {} and store.votes("bob@example.org") == {"p1": 1}
    if on_postgresql(request.config):
        return  # the file of unsubscribes beside the store is TinyDB's
    # an unsubscribe recorded beside the store (unsubscribes.pending) takes the votes too
    append_departure(tmp_path, "bob@example.org", datetime.now(UTC))
    assert Store(tmp_path, writable=False).votes("bob@example.org") == {}


def test_a_vote_of_the_wrong_shape_is_named_by_the_shape_check() -> None:
    meta = {"1": {"schema_version": 4, "prune_horizon": None}}
    bad = {"1": {"email": ADA, "paper": "p1", "vote": 5, "at": NOW.isoformat()}}
    assert shape_problems({"meta": meta, "votes": bad}) == ["votes document 1: 'vote' is 5"]


# -- the email -------------------------------------------------------------------------------------
def test_each_paper_shown_in_full_has_its_two_signed_vote_links_in_both_parts() -> None:
    digest = sample_digest()
    links = digest_links(signer(), "https://digest.example.org", digest)
    rendered = render_digest(digest, links)
    found = re.findall(
        r'href="(https://digest\.example\.org/vote\?token=[^"]+)">(More like this|Not for me)<', rendered.html
    )
    assert len(found) == 2 * len(digest.entries)
    for (more, more_label), (less, less_label), entry in zip(found[::2], found[1::2], digest.entries, strict=True):
        assert (more_label, less_label) == ("More like this", "Not for me")
        for url, vote in ((more, 1), (less, -1)):
            query = parse_qs(urlsplit(htmllib.unescape(url)).query)
            assert signer().verify("vote", query["token"][0])["e"] == digest.subscriber.email
            assert (query["p"], query["v"]) == ([entry.item.id], [str(vote)])
            assert f"{'More like this' if vote > 0 else 'Not for me'}: {htmllib.unescape(url)}" in rendered.text


def test_with_vote_links_a_big_day_still_fits_the_html_budget() -> None:
    digest = digest_for(real_day(), ("real-time", "video", "diffusion", "gaussian", "4090", "model"))
    rendered = render_digest(digest, digest_links(signer(), "https://digest.example.org", digest))
    assert html_part_size(rendered.html_bytes(), seven_bit_html(rendered.html_bytes())) <= HTML_LIMIT_BYTES
    assert rendered.html.count(">Not for me<") == rendered.papers_in_full > 0


# -- the vote page ----------------------------------------------------------------------------------
def test_a_link_scanner_fetching_both_links_records_nothing(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper = paper_id(items, "Live Avatar")
    for vote in (1, -1):
        for method in (client.get, client.head):
            page = method(vote_link(paper, vote))
            assert page.status_code == 200
    page = client.get(vote_link(paper, -1))
    assert "Not for me?" in page.text and "Live Avatar" in page.text and 'method="post"' in page.text
    assert votes(settings) == {}


def test_pressing_records_the_vote_the_latest_press_wins_and_points_to_the_digests_manage_link(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper = paper_id(items, "Live Avatar")
    done = press(client, vote_link(paper, -1))
    assert done.status_code == 200 and "Noted: not for me" in done.text
    assert votes(settings) == {paper: -1}
    assert "“Manage your rules” link at the end of your latest digest" in " ".join(done.text.split())
    press(client, vote_link(paper, 1))
    assert votes(settings) == {paper: 1}


def test_forged_tampered_and_other_purpose_tokens_record_nothing(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper = paper_id(items, "Live Avatar")
    good = signer().sign("vote", ADA, p=paper, v=-1)
    forged = Signer("another-secret").sign("vote", ADA, p=paper, v=-1)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    wrong_purpose = signer().sign("manage", ADA, p=paper, v=-1)
    bad_vote = signer().sign("vote", ADA, p=paper, v=7)
    for token in (forged, tampered, wrong_purpose, bad_vote, "", "x" * 5000):
        assert client.get("/vote", params={"token": token}).status_code == 400
        page = client.get(vote_link(paper, -1))  # a real page's form token, a bad vote token
        answer = client.post("/vote", data={"csrf": csrf_of(page.text), "token": token})
        assert answer.status_code == 400 and "This link does not work" in answer.text
    assert votes(settings) == {}


def test_a_replayed_press_changes_nothing_more(
    client: httpx.Client, settings: Settings, items: list[Item], request: pytest.FixtureRequest
) -> None:
    paper = paper_id(items, "Live Avatar")
    link = vote_link(paper, -1)
    page = client.get(link)
    form = {"csrf": csrf_of(page.text), "token": link.split("token=")[1]}
    assert client.post("/vote", data=form).status_code == 200
    tinydb = not on_postgresql(request.config)
    journal = settings.data_dir / JOURNAL_FILE
    size = journal.stat().st_size if tinydb else 0
    for _ in range(3):
        assert client.post("/vote", data=form).status_code == 200
    if tinydb:  # nothing written: the TinyDB journal did not grow
        assert journal.stat().st_size == size
    assert votes(settings) == {paper: -1}


def test_a_vote_for_a_paper_not_in_the_store_or_by_a_leaver_records_nothing(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    missing = client.get(vote_link("2611.00000", -1))
    assert missing.status_code == 404 and "no longer stored" in missing.text
    paper = paper_id(items, "Live Avatar")
    page = client.get(vote_link(paper, -1))
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.remove_subscriber(ADA)
    answer = client.post("/vote", data={"csrf": csrf_of(page.text), "token": vote_link(paper, -1).split("token=")[1]})
    assert answer.status_code == 404 and "not subscribed" in answer.text
    assert client.get(vote_link(paper, 1)).status_code == 404
    assert votes(settings) == {}


def test_a_press_without_its_form_token_or_from_another_site_records_nothing(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper = paper_id(items, "Live Avatar")
    token = vote_link(paper, -1).split("token=")[1]
    assert client.post("/vote", data={"token": token}).status_code == 400
    page = client.get(vote_link(paper, -1))
    cross = client.post(
        "/vote", data={"csrf": csrf_of(page.text), "token": token}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross.status_code == 400 and "another site" in cross.text
    assert client.post("/vote", content=b"token=" + b"x" * 40_000).status_code == 413
    assert votes(settings) == {}


def test_a_flood_of_votes_is_slowed_down_per_client(settings: Settings, items: list[Item]) -> None:
    with running(settings, Clock(), WebLimits(votes_per_ip=4)) as client:
        paper = paper_id(items, "Live Avatar")
        answers = [client.get(vote_link(paper, -1)).status_code for _ in range(6)]
        assert answers == [200, 200, 200, 200, 429, 429]
        assert votes(settings) == {}


def test_many_votes_at_once_are_all_kept_and_other_pages_answer_meanwhile(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    papers = list(dict.fromkeys(item.id for item in items))[:40]  # a paper listed on two days once
    csrf = csrf_of(client.get(vote_link(papers[0], -1)).text)
    base = str(client.base_url)

    def vote(n: int) -> int:
        token = vote_link(papers[n], -1 if n % 2 else 1).split("token=")[1]
        with httpx.Client(base_url=base, timeout=30) as own:
            return own.post("/vote", data={"csrf": csrf, "token": token}).status_code

    def other(_: int) -> int:
        with httpx.Client(base_url=base, timeout=30) as own:
            return own.get("/").status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        pressed = pool.map(vote, range(len(papers)))
        others = pool.map(other, range(10))
        assert list(pressed) == [200] * len(papers) and list(others) == [200] * 10
    assert votes(settings) == {p: (-1 if n % 2 else 1) for n, p in enumerate(papers)}


# -- suggestions on the manage page, and accepting one --------------------------------------------------
def reject_the_avatars(client: httpx.Client, items: list[Item]) -> None:
    for title in ("LLIA", "Live Avatar", "SoulX-FlashTalk"):
        assert press(client, vote_link(paper_id(items, title), -1)).status_code == 200
    assert press(client, vote_link(paper_id(items, "LongLive"), 1)).status_code == 200


def accept_form(page: str) -> dict[str, str]:
    section = page[page.index('id="suggestions"') :]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', section))
    return {name: htmllib.unescape(value) for name, value in fields.items()}


def test_the_manage_page_suggests_and_nothing_changes_until_accepted(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    before = client.get(manage_link())
    assert "Mark at least" in before.text
    reject_the_avatars(client, items)
    page = client.get(manage_link())
    assert "real-time → real-time -avatar: removes" in htmllib.unescape(page.text)
    assert "including the 2 you marked 'not for me'; keeps the one you liked" in htmllib.unescape(page.text)
    assert rules_of(settings) == ("real-time", "4090")
    form = accept_form(page.text)
    assert (form["rule"], form["changed"]) == ("real-time", "real-time -avatar")
    done = client.post("/suggestion", data=form)
    assert done.status_code == 200 and "Your changes are saved." in done.text
    assert rules_of(settings) == ("real-time -avatar", "4090")
    again = client.post("/suggestion", data=form)  # accepted twice: the rule is gone, nothing changes
    assert again.status_code == 409 and "nothing was changed" in again.text
    assert rules_of(settings) == ("real-time -avatar", "4090")


def test_accepting_needs_the_signed_manage_token_its_form_and_a_working_rule(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    reject_the_avatars(client, items)
    form = accept_form(client.get(manage_link()).text)
    forged = {**form, "token": Signer("another-secret").sign("manage", ADA)}
    vote_token = {**form, "token": signer().sign("vote", ADA, p="x", v=-1)}
    broken = {**form, "changed": 'real-time -"unclosed'}
    huge = {**form, "changed": "real-time -" + "a" * 600}
    no_form_token = {k: v for k, v in form.items() if k != "csrf"}
    assert client.post("/suggestion", data=forged).status_code == 400
    assert client.post("/suggestion", data=vote_token).status_code == 400
    assert client.post("/suggestion", data=broken).status_code == 400
    assert client.post("/suggestion", data=huge).status_code == 400
    assert client.post("/suggestion", data=no_form_token).status_code == 400
    assert rules_of(settings) == ("real-time", "4090")


def test_suggestions_are_counted_on_the_last_30_days_only(settings: Settings, items: list[Item]) -> None:
    avatar = next(item for item in items if item.title.startswith("Live Avatar"))
    with open_backend(settings.store.url, settings.data_dir) as store:  # an older copy of a rejected paper: not counted
        store.upsert_items([replace(avatar, id="old-1", listed_on=date(2026, 9, 1))], NOW)
    with running(settings, Clock()) as client:
        reject_the_avatars(client, items)
        text = htmllib.unescape(client.get(manage_link()).text)

    def mine(rules: tuple[str, ...]) -> set[str]:  # what `digest try` lists, rule by rule
        return set().union(*({e.item.id for e in try_rule(parse_rule(r), items).entries} for r in rules))

    before, after = mine(("real-time", "4090")), mine(("real-time -avatar", "4090"))
    expected = f"removes {len(before - after)} of {len(before)} papers of the last 30 days"
    assert expected in text


# -- a real cycle's email ---------------------------------------------------------------------------
def test_a_real_cycles_email_carries_vote_links_that_work(hf_api: Any, smtp: Any, tmp_path: Path) -> None:
    """``digest run`` (its render process included) mails the links; the web front records them."""
    data_dir = tmp_path / "data"
    env = {**cli_env(data_dir, hf_api, smtp), "DIGEST_SECRET_KEY": SECRET}
    assert run_cli("subscribe", ADA, "-k", "real-time", env=env).returncode == 0
    ran = run_cli("run", "--date", "2026-11-20", env=env)
    assert ran.returncode == 0, ran.stderr
    text = text_of(smtp.to(ADA)[-1])
    links = re.findall(r"Not for me: https://digest\.example\.org(/vote\?token=\S+)", text)
    assert links and len(links) == len(re.findall(r"More like this: https://\S+/vote\?token=", text))
    settings = make_settings(data_dir, None)
    with running(settings, Clock()) as client:
        assert press(client, links[0]).status_code == 200
    paper = parse_qs(urlsplit(links[0]).query)["p"][0]
    assert votes(settings) == {paper: -1}


def test_a_suggested_rule_of_its_own_is_added_once() -> None:
    assert edited(("real-time", "4090"), "", "-avatar") == ("real-time", "4090", "-avatar")
    assert edited(("real-time", "4090", "-avatar"), "", "-avatar") is None
    assert edited(("real-time", "4090"), "real-time", "real-time -avatar") == ("real-time -avatar", "4090")
    assert edited(("real-time -avatar", "4090"), "real-time", "real-time -avatar") is None
