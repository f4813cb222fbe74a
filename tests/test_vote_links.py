"""Vote links with one token per email: ``/vote?token=<address only>&p=<paper>&v=1|-1``.

Signed once per digest rather than twice per paper (:mod:`digest.cycle.links`); the page reads the
paper and vote from the query (GET) and its hidden fields (POST), as strictly as it read them from
the token, and a token from an older email (paper and vote inside) keeps working and wins. Over
real HTTP against a real store, with the abuse cases: forged, other purposes, other people, bad
``p``/``v``, unknown papers, many presses at once."""

# ruff: noqa: F811 (the fixtures of test_feedback.py, imported, are the tests' parameters)
from __future__ import annotations

import html as htmllib
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from digest.cycle.links import digest_links, vote_start
from digest.mail.render import render_digest
from digest.mail.votes import MAX_VOTE_PAPER_CHARS, MAX_VOTE_URL_CHARS, Vote, paper_vote
from digest.models import Item, Subscriber
from digest.settings import Settings
from digest.signing import Signer
from tests.conftest import pass_store
from tests.email_fixtures import digest_for
from tests.test_feedback import ADA, client, items, manage_link, paper_id, signer  # noqa: F401 (fixtures)
from tests.web_support import Clock, csrf_of, make_settings, running

BOB = "bob@example.org"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
INVALID = "This link does not work"
# A feed paper's id with everything a query string treats specially, and more than ASCII.
ODD_ID = "blog:https://blog.example.org/post?a=1&b=2+3#top 50%/é"


@pytest.fixture
def settings(tmp_path: Path, items: list[Item]) -> Settings:
    """As ``test_feedback.py``'s: the sample papers and Ada, in the pass's store (TinyDB or PostgreSQL)."""
    data_dir = tmp_path / "data"
    with pass_store(data_dir) as store:
        store.upsert_items(items, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
        store.save_subscriber(Subscriber(ADA, ("real-time", "4090"), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    return make_settings(data_dir, None)


def votes(settings: Settings, email: str = ADA) -> dict[str, int]:
    with pass_store(settings.data_dir, write=False) as store:
        return store.votes(email)


def link(paper: str, vote: int, email: str = ADA) -> str:
    """A link as the email writes it now: the address-only token, the paper and vote beside it."""
    return f"/vote?token={signer().sign('vote', email)}&p={quote(paper, safe='')}&v={vote}"


def press(client: httpx.Client, url: str, **extra: str) -> httpx.Response:
    """Open a vote link and press its button with the form the page gave (its hidden fields)."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    form = {name: htmllib.unescape(value) for name, value in HIDDEN.findall(page.text)}
    return client.post("/vote", data={**form, **extra})


def email_links(settings: Settings, items: list[Item]) -> list[str]:
    """The text part's vote links of Ada's digest of the stored papers matching "real-time"."""
    digest = digest_for(items, ("real-time",), email=ADA)
    rendered = render_digest(digest, digest_links(signer(), settings.public_url, digest))
    found = re.findall(r"(?:More like this|Not for me): (\S+)", rendered.text)
    assert len(found) == 2 * len(digest.entries) > 2
    return found


def test_an_emails_vote_links_share_one_token_show_on_get_and_record_on_post(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    urls = email_links(settings, items)
    queries = [parse_qs(urlsplit(url).query) for url in urls]
    assert len({q["token"][0] for q in queries}) == 1, "one signature per email"
    assert signer().verify("vote", queries[0]["token"][0]) == {"e": ADA}
    assert [q["v"] for q in queries[:2]] == [["1"], ["-1"]]
    for url in urls[:2]:
        page = client.get(url)
        assert page.status_code == 200 and 'method="post"' in page.text
    assert votes(settings) == {}, "a GET records nothing"
    (more, less), (other, _) = (urls[0], urls[1]), (urls[2], urls[3])
    paper, second = queries[0]["p"][0], queries[2]["p"][0]
    done = press(client, less)
    assert done.status_code == 200 and "Noted: not for me" in done.text
    assert press(client, other).status_code == 200
    assert votes(settings) == {paper: -1, second: 1}
    assert press(client, more).status_code == 200
    assert votes(settings) == {paper: 1, second: 1}


def test_a_paper_id_with_query_characters_goes_there_and_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    odd = Item(ODD_ID, "blog", "Zanzibarquux & friends", "", "https://blog.example.org/post", date(2026, 11, 20))
    with pass_store(data_dir) as store:
        store.upsert_items([odd], datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
        store.save_subscriber(Subscriber(ADA, ("zanzibarquux",), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    settings = make_settings(data_dir, None)
    start = vote_start(signer(), settings.public_url, ADA)
    vote = paper_vote(start, start, ODD_ID)  # the start as it is for the HTML too: only the text link is used
    assert vote is not None
    url = vote.less
    assert parse_qs(urlsplit(url).query)["p"] == [ODD_ID] and "#" not in url
    with running(settings, Clock()) as client:
        assert "Zanzibarquux &amp; friends" in client.get(url).text
        assert press(client, url).status_code == 200
    assert votes(settings) == {ODD_ID: -1}


def test_an_old_emails_token_still_works_and_its_paper_and_vote_win(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper, decoy = paper_id(items, "Live Avatar"), paper_id(items, "LongLive")
    old = signer().sign("vote", ADA, p=paper, v=-1)
    url = f"/vote?token={old}&p={quote(decoy)}&v=1"
    page = client.get(url)
    assert page.status_code == 200 and "Not for me?" in page.text and "Live Avatar" in page.text
    assert "LongLive" not in page.text
    done = press(client, url, p=decoy, v="1")  # the form's p/v overridden: the token still wins
    assert done.status_code == 200 and "Noted: not for me" in done.text
    assert votes(settings) == {paper: -1}
    assert press(client, "/vote?token=" + old).status_code == 200  # as such links were mailed


def test_forged_and_tampered_tokens_are_refused(client: httpx.Client, settings: Settings, items: list[Item]) -> None:
    paper = quote(paper_id(items, "Live Avatar"))
    good = signer().sign("vote", ADA)
    forged = Signer("another-secret").sign("vote", ADA)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    csrf = csrf_of(client.get(link(paper_id(items, "Live Avatar"), -1)).text)
    for token in (forged, tampered, "", "x" * (MAX_VOTE_URL_CHARS + 1)):
        answer = client.get(f"/vote?token={token}&p={paper}&v=-1")
        assert answer.status_code == 400 and INVALID in answer.text
        form = {"csrf": csrf, "token": token, "p": paper_id(items, "Live Avatar"), "v": "-1"}
        posted = client.post("/vote", data=form)
        assert posted.status_code == 400 and INVALID in posted.text
    assert votes(settings) == {}


def test_a_vote_or_paper_not_written_as_the_email_writes_them_is_refused(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper = paper_id(items, "Live Avatar")
    token = signer().sign("vote", ADA)
    csrf = csrf_of(client.get(link(paper, -1)).text)
    bad: list[dict[str, str]] = [{"p": paper, "v": v} for v in ("2", "+1", "01", "1.0", " 1", "-0", "", "true")]
    bad += [{"p": paper}, {"v": "1"}, {"p": "", "v": "1"}, {"p": "x" * (MAX_VOTE_PAPER_CHARS + 1), "v": "1"}]
    for fields in bad:
        answer = client.get("/vote", params={"token": token, **fields})
        assert answer.status_code == 400 and INVALID in answer.text, fields
        posted = client.post("/vote", data={"csrf": csrf, "token": token, **fields})
        assert posted.status_code == 400 and INVALID in posted.text, fields
    longest = client.get("/vote", params={"token": token, "p": "x" * MAX_VOTE_PAPER_CHARS, "v": "1"})
    assert longest.status_code == 404 and "Paper no longer here" in longest.text  # within bounds, not stored
    assert votes(settings) == {}


def test_a_vote_token_is_no_other_link_and_no_other_token_votes(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    vote_token = signer().sign("vote", ADA)
    paper = paper_id(items, "Live Avatar")
    assert client.get("/vote", params={"token": vote_token, "p": paper, "v": "-1"}).status_code == 200  # its one use
    assert client.get("/manage", params={"token": vote_token}).status_code == 400
    assert client.get("/unsubscribe", params={"token": vote_token}).status_code == 400
    one_click = client.post(f"/unsubscribe?token={vote_token}", data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code >= 400
    assert client.get("/digest/0123abcd", params={"token": vote_token}).status_code == 400
    with pass_store(settings.data_dir) as store:
        assert store.subscriber(ADA) is not None, "still subscribed"
    others = [signer().sign(purpose, ADA) for purpose in ("manage", "unsubscribe", "confirm")]
    for token in [*others, signer().sign("digest", ADA, d="0123abcd"), manage_link().split("token=")[1]]:
        answer = client.get("/vote", params={"token": token, "p": paper, "v": "-1"})
        assert answer.status_code == 400 and INVALID in answer.text
    assert votes(settings) == {}


def test_a_token_votes_for_its_own_address_only(client: httpx.Client, settings: Settings, items: list[Item]) -> None:
    with pass_store(settings.data_dir) as store:
        store.save_subscriber(Subscriber(BOB, ("4090",), subscribed_at=datetime(2026, 11, 1, tzinfo=UTC)))
    paper = paper_id(items, "Live Avatar")
    url = link(paper, -1) + f"&e={quote(BOB)}&email={quote(BOB)}"
    assert press(client, url, e=BOB, email=BOB).status_code == 200
    assert press(client, link(paper, 1, email=BOB)).status_code == 200
    assert votes(settings) == {paper: -1} and votes(settings, BOB) == {paper: 1}


def test_a_paper_not_stored_is_the_paper_no_longer_here_page(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    missing = client.get(link("2611.00000", -1))
    assert missing.status_code == 404 and "Paper no longer here" in missing.text
    csrf = csrf_of(client.get(link(paper_id(items, "Live Avatar"), -1)).text)
    form = {"csrf": csrf, "token": signer().sign("vote", ADA), "p": "2611.00000", "v": "-1"}
    posted = client.post("/vote", data=form)
    assert posted.status_code == 404 and "Paper no longer here" in posted.text
    assert votes(settings) == {}


def test_many_presses_at_once_for_one_paper_are_all_answered_and_keep_one_vote(
    client: httpx.Client, settings: Settings, items: list[Item]
) -> None:
    paper = paper_id(items, "Live Avatar")
    page = client.get(link(paper, -1))
    form = {name: htmllib.unescape(value) for name, value in HIDDEN.findall(page.text)}
    base = str(client.base_url)

    def vote(n: int) -> int:
        with httpx.Client(base_url=base, timeout=30) as own:
            return own.post("/vote", data={**form, "v": "1" if n % 2 else "-1"}).status_code

    def other(_: int) -> int:
        with httpx.Client(base_url=base, timeout=30) as own:
            return own.get("/").status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        pressed = pool.map(vote, range(40))
        others = pool.map(other, range(10))
        assert list(pressed) == [200] * 40 and list(others) == [200] * 10
    kept = votes(settings)
    assert list(kept) == [paper] and kept[paper] in (1, -1)


def test_a_link_too_long_for_the_email_is_not_made() -> None:
    start = vote_start(signer(), "https://digest.example.org", ADA)

    def make(paper: str) -> Vote | None:  # the start as it is for the HTML too: only None or not matters
        return paper_vote(start, start, paper)

    assert make("blog:" + "x" * 300) is not None
    assert make("blog:" + "é" * 200) is None, "205 characters, 1,200 once URL-encoded: past the link's bound"
    assert make("x" * (MAX_VOTE_PAPER_CHARS + 1)) is None
    assert make("blog:\ud800") is None, "no URL carries a lone surrogate"
