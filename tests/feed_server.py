"""A real local HTTP server for feeds (arXiv's category feeds, RSS, Atom, JSON Feed) on 127.0.0.1.

Each path serves a :class:`Route`. A route with an ``etag`` or ``last_modified`` answers
``304 Not Modified`` to a request that presents it, as real servers do. Every request is kept with
its headers and the server's own monotonic timestamp (taken when the request arrives), so tests can
check spacing and conditional headers from the server's side.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse
from xml.sax.saxutils import escape

from tests.servers import send_answer

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
RSS = "application/rss+xml; charset=utf-8"


def fixture(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


@dataclass
class Route:
    body: bytes
    content_type: str = RSS
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    cache_control: str | None = None


@dataclass
class FeedRequest:
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class FeedServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[FeedRequest] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def to(self, path: str) -> list[FeedRequest]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> FeedServer:
        feeds = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                feeds.requests.append(
                    FeedRequest(path, {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
                )
                route = feeds.routes.get(path)
                if route is None:
                    self._answer(404, {"Content-Type": "text/plain"}, b"no such feed")
                    return
                validators = {}
                if route.etag:
                    validators["ETag"] = route.etag
                if route.last_modified:
                    validators["Last-Modified"] = route.last_modified
                if route.cache_control:
                    validators["Cache-Control"] = route.cache_control
                if route.status == 200 and self._not_modified(route):
                    self._answer(304, validators, b"")
                    return
                self._answer(route.status, {"Content-Type": route.content_type, **validators}, route.body)

            def _not_modified(self, route: Route) -> bool:
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    return True
                return bool(route.last_modified and self.headers.get("If-Modified-Since") == route.last_modified)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                send_answer(self, status, headers, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def arxiv_rss(pub_date: str, entries: list[dict[str, str | list[str]]]) -> bytes:
    """An arXiv category feed in the shape rss.arxiv.org serves (RSS 2.0 with arxiv: and dc: elements).

    Each entry: ``id`` (with version), ``title``, ``abstract``, ``type`` (new, cross, replace,
    replace-cross), ``authors`` and ``categories`` (lists).
    """
    items = []
    for entry in entries:
        paper_id = str(entry["id"])
        bare = paper_id.rsplit("v", 1)[0]
        categories = "".join(f"<category>{escape(c)}</category>" for c in entry["categories"])
        description = f"arXiv:{paper_id} Announce Type: {entry['type']} \nAbstract: {entry['abstract']}"
        items.append(
            f"""    <item>
      <title>{escape(str(entry["title"]))}</title>
      <link>https://arxiv.org/abs/{bare}</link>
      <description>{escape(description)}</description>
      <guid isPermaLink="false">oai:arXiv.org:{paper_id}</guid>
      {categories}
      <pubDate>{pub_date}</pubDate>
      <arxiv:announce_type>{entry["type"]}</arxiv:announce_type>
      <dc:rights>http://creativecommons.org/licenses/by/4.0/</dc:rights>
      <dc:creator>{escape(", ".join(entry["authors"]))}</dc:creator>
    </item>
"""
        )
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0">
  <channel>
    <title>cs.CV updates on arXiv.org</title>
    <link>http://rss.arxiv.org/rss/cs.CV</link>
    <description>cs.CV updates on the arXiv.org e-print archive.</description>
    <language>en-us</language>
    <pubDate>{pub_date}</pubDate>
{"".join(items)}  </channel>
</rss>
""".encode()
