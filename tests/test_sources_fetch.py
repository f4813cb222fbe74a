"""arXiv and feed sources against a real local HTTP server, with a real store for their state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.settings import ArxivSettings, FeedSettings
from digest.sources import make_client
from digest.sources.arxiv import GATE, ArxivSource, RequestSpacer
from digest.sources.feed import FeedSource
from digest.state.store import Store
from tests.conftest import pass_store
from tests.feed_server import FeedServer, Route, fixture

DAY = date(2026, 11, 20)
ARXIV_PATH = "/rss/cs.CV+cs.LG"


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()


def arxiv_settings(server: FeedServer, **extra: object) -> ArxivSettings:
    return ArxivSettings.model_validate(
        {"enabled": True, "base_url": server.base_url, "min_interval_seconds": 0, **extra}
    )


def test_arxiv_fetch_reads_the_category_feed(feeds: FeedServer) -> None:
    feeds.routes[ARXIV_PATH] = Route(fixture("arxiv_cs.xml"))
    with make_client() as client:
        result = ArxivSource(arxiv_settings(feeds), gate=RequestSpacer()).fetch(client, [DAY])
    assert [i.id for i in result.items] == ["2611.23289", "2611.30001"]
    assert result.errors == [] and result.failed_days == []
    (request,) = feeds.requests
    assert request.path == ARXIV_PATH
    assert request.headers["user-agent"].startswith("digest/")
    assert "application/rss+xml" in request.headers["accept"]


def test_arxiv_weekend_is_not_an_error(feeds: FeedServer) -> None:
    feeds.routes[ARXIV_PATH] = Route(fixture("arxiv_weekend.xml"))
    with make_client() as client:
        result = ArxivSource(arxiv_settings(feeds), gate=RequestSpacer()).fetch(client, [date(2026, 11, 22)])
    assert (result.items, result.errors, result.failed_days, result.warnings) == ([], [], [], [])


def test_arxiv_down_fails_the_day_with_a_clear_error(feeds: FeedServer) -> None:
    feeds.routes[ARXIV_PATH] = Route(b"Service Unavailable", "text/plain", status=503)
    with make_client() as client:
        result = ArxivSource(arxiv_settings(feeds), gate=RequestSpacer()).fetch(client, [DAY, DAY])
    assert result.failed_days == [DAY]
    assert result.errors == [f"arxiv ({feeds.url(ARXIV_PATH)}): HTTP 503"]


def test_every_arxiv_source_shares_one_gate(feeds: FeedServer) -> None:
    assert ArxivSource(arxiv_settings(feeds)).gate is ArxivSource(arxiv_settings(feeds)).gate is GATE


def test_arxiv_requests_are_three_seconds_apart_and_one_at_a_time(feeds: FeedServer) -> None:
    """The real interval, checked by the server's own clock: two sources asking at the same moment."""
    feeds.routes[ARXIV_PATH] = Route(fixture("arxiv_cs.xml"))
    settings = arxiv_settings(feeds, min_interval_seconds=3.0)
    gate = RequestSpacer()  # the process-wide GATE's behaviour, without waiting on other tests' requests
    results = []

    def fetch() -> None:
        with make_client() as client:
            results.append(ArxivSource(settings, gate=gate).fetch(client, [DAY]))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    first, second = sorted(r.at for r in feeds.requests)
    assert second - first >= 3.0
    assert [len(r.items) for r in results] == [2, 2]


def test_feed_answering_304_the_second_time(feeds: FeedServer, tmp_path: Path) -> None:
    feeds.routes["/atom.xml"] = Route(fixture("atom.xml"), "application/atom+xml", etag='"v1"')
    source_settings = FeedSettings(name="gpu-notes", url=feeds.url("/atom.xml"))
    with make_client() as client:
        with pass_store(tmp_path) as store:
            first = FeedSource(source_settings, store).fetch(client, [DAY])
        with pass_store(tmp_path) as reopened:  # the validators were written to the store
            second = FeedSource(source_settings, reopened).fetch(client, [DAY])
            assert reopened.source_state("gpu-notes")["etag"] == '"v1"'
    assert len(first.items) == 2 and first.errors == []
    assert second.items == [] and second.errors == [] and second.failed_days == []
    assert "if-none-match" not in feeds.requests[0].headers
    assert feeds.requests[1].headers["if-none-match"] == '"v1"'


def test_feed_with_last_modified_only(feeds: FeedServer, tmp_path: Path) -> None:
    stamp = "Fri, 20 Nov 2026 05:00:00 GMT"
    feeds.routes["/feed.json"] = Route(fixture("feed.json"), "application/feed+json", last_modified=stamp)
    source = FeedSource(FeedSettings(name="releases", url=feeds.url("/feed.json")), Store(tmp_path))
    with make_client() as client:
        assert len(source.fetch(client, [DAY]).items) == 2
        assert source.fetch(client, [DAY]).items == []
    assert feeds.requests[1].headers["if-modified-since"] == stamp


def test_feed_fresh_by_cache_control_is_not_asked_again(feeds: FeedServer, tmp_path: Path) -> None:
    feeds.routes["/deals.xml"] = Route(fixture("rss2_html.xml"), cache_control="public, max-age=3600")
    source = FeedSource(FeedSettings(name="deals", url=feeds.url("/deals.xml")), Store(tmp_path))
    with make_client() as client:
        assert len(source.fetch(client, [DAY]).items) == 3
        again = source.fetch(client, [DAY])
    assert again.items == [] and again.errors == []
    assert len(feeds.requests) == 1


def test_feed_freshness_runs_out(feeds: FeedServer, tmp_path: Path) -> None:
    feeds.routes["/deals.xml"] = Route(fixture("rss2_html.xml"))  # <ttl>60</ttl> in the channel
    clock = [datetime(2026, 11, 20, 7, tzinfo=UTC)]
    source = FeedSource(FeedSettings(name="deals", url=feeds.url("/deals.xml")), Store(tmp_path), lambda: clock[0])
    with make_client() as client:
        source.fetch(client, [DAY])
        clock[0] = clock[0].replace(minute=59)
        source.fetch(client, [DAY])
        clock[0] = clock[0].replace(hour=8, minute=1)
        source.fetch(client, [DAY])
    assert len(feeds.requests) == 2


def test_malformed_feed_fails_clearly_and_keeps_no_validators(feeds: FeedServer, tmp_path: Path) -> None:
    feeds.routes["/broken.xml"] = Route(fixture("malformed.xml"), etag='"broken"')
    store = Store(tmp_path)
    source = FeedSource(FeedSettings(name="broken", url=feeds.url("/broken.xml")), store)
    with make_client() as client:
        result = source.fetch(client, [DAY])
        assert result.items == [] and result.failed_days == [DAY]
        (error,) = result.errors
        assert error.startswith(f"feed broken ({feeds.url('/broken.xml')}): malformed feed, cut short or broken")
        assert store.source_state("broken") == {}
        feeds.routes["/broken.xml"] = Route(fixture("rss091.xml"), etag='"fixed"')
        fixed = source.fetch(client, [DAY])
    assert [i.title for i in fixed.items] == ["4090 prices fall"]
    assert "if-none-match" not in feeds.requests[1].headers  # asked in full: the broken copy was not kept


def test_feed_that_is_an_html_page(feeds: FeedServer) -> None:
    feeds.routes["/login"] = Route(b"<!doctype html><html><title>Sign in</title></html>", "text/html")
    with make_client() as client:
        result = FeedSource(FeedSettings(name="paywalled", url=feeds.url("/login"))).fetch(client, [DAY])
    assert result.errors == [
        f"feed paywalled ({feeds.url('/login')}): not an RSS, Atom or JSON feed (the server sent text/html)"
    ]


def test_validators_do_not_follow_a_feed_to_a_new_url(feeds: FeedServer, tmp_path: Path) -> None:
    stamp = "Fri, 20 Nov 2026 05:00:00 GMT"
    feeds.routes["/old.xml"] = Route(fixture("rss091.xml"), last_modified=stamp)
    feeds.routes["/new.xml"] = Route(fixture("rss1.xml"), last_modified=stamp)
    store = Store(tmp_path)
    with make_client() as client:
        FeedSource(FeedSettings(name="news", url=feeds.url("/old.xml")), store).fetch(client, [DAY])
        moved = FeedSource(FeedSettings(name="news", url=feeds.url("/new.xml")), store).fetch(client, [DAY])
    assert [i.title for i in moved.items] == ["Gaussian splatting in RSS 1.0"]
    assert "if-modified-since" not in feeds.to("/new.xml")[0].headers
