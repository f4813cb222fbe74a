"""Shared by the web tests: settings for a test site, a store seeded with real sample papers, a
controllable clock, and a real uvicorn server on 127.0.0.1 running ``create_app``.

The web tests talk real HTTP to uvicorn (not an in-process test client): cookies, redirects,
multipart bodies and headers go through the same server stack as in ``digest serve``."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from digest.models import Item
from digest.settings import Settings
from digest.sources.hf_papers import parse
from digest.state.backend import is_postgres, open_backend
from digest.web.app import WebLimits, create_app
from tests.servers import SmtpSink, free_port

TODAY = date(2026, 11, 20)  # the last day of the bundled sample
SECRET = "test-secret-key-for-the-web-tests"
CSRF_INPUT = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class Clock:
    """A clock the test moves by hand: rate-limit windows and expiry without waiting."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def make_settings(
    data_dir: Path, smtp: SmtpSink | None, public_url: str | None = None, store_url: str | None = None
) -> Settings:
    """Settings whose ``public_url`` is a free local port, where :func:`running` will serve them;
    the store is ``store_url``, else the pass's (``DIGEST_STORE__URL``, else TinyDB)."""
    public_url = public_url or f"http://127.0.0.1:{free_port()}"
    smtp_settings: dict[str, Any] = {"from_address": "papers@digest.example.org"}
    if smtp is not None:
        smtp_settings.update(host="127.0.0.1", port=smtp.port, security="none", timeout_seconds=10)
    store = {"store": {"url": store_url}} if store_url is not None else {}
    return Settings(data_dir=data_dir, public_url=public_url, secret_key=SECRET, smtp=smtp_settings, **store)


def seeded_site(data_dir: Path, smtp: SmtpSink | None, items: list[Item], store_url: str | None = None) -> Settings:
    """:func:`make_settings` for a store (TinyDB, or a PostgreSQL database) holding ``items``."""
    site = make_settings(data_dir, smtp, store_url=store_url)
    seed_store(site, items)
    return site


def seed_store(settings: Settings, items: list[Item]) -> None:
    """:func:`seed_items` into the store ``settings`` name, TinyDB or PostgreSQL."""
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.upsert_items(items, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))


def sample_items(sample_days: dict[str, list[dict[str, Any]]]) -> list[Item]:
    items: list[Item] = []
    for day, entries in sample_days.items():
        parsed, warnings = parse(entries, "https://huggingface.co", date.fromisoformat(day))
        assert not warnings
        items.extend(parsed)
    return items


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def link_in(message: EmailMessage, path: str) -> str:
    found = re.search(r"https?://\S+" + re.escape(path) + r"\?token=[A-Za-z0-9_.\-]+", text_of(message))
    assert found, f"no {path} link in the email"
    return found.group(0)


@contextmanager
def live_server(app: Starlette, port: int | None = None, lifespan: str = "off") -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port unless given); yield its base URL.
    ``lifespan="on"`` runs the app's start-up as ``digest web`` does."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextmanager
def running(settings: Settings, clock: Clock, limits: WebLimits | None = None) -> Iterator[httpx.Client]:
    """``create_app`` served by uvicorn at ``settings.public_url``, and a browser-like client (keeps cookies)."""
    app = create_app(settings, clock=clock, today=lambda: TODAY, limits=limits)
    port = int(settings.public_url.rsplit(":", 1)[1])
    try:
        with live_server(app, port) as base, httpx.Client(base_url=base, timeout=30, follow_redirects=True) as client:
            yield client
    finally:
        if is_postgres(settings.store.url):  # its connections (the TinyDB keeper is left as it always was)
            app.state.front.keeper.close()
