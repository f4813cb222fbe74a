"""The web front served by ``digest serve``: the routes, the middleware and :func:`create_app`.

Sign up with double opt-in (:mod:`~digest.web.subscribe`, :mod:`~digest.web.live_preview`,
:mod:`~digest.web.confirm`), manage (:mod:`~digest.web.manage`), unsubscribe
(:mod:`~digest.web.unsubscribe`), archived digests (:mod:`~digest.web.archive`), a personal Atom
feed (:mod:`~digest.web.feed`), ``/healthz`` and ``/metrics``. Pages (Jinja2, ``templates/web``) work
without JavaScript; one same-origin script adds the live preview. Every page reads and writes the
process's one in-memory store through
:class:`digest.state.keeper.StoreKeeper` (:class:`~digest.web.front.Front`): a change is journalled
and fsynced before it is answered, also while the service's own cycle sends; only a ``digest run``
started beside the service holds the store lock long enough for a friendly "busy, try again".

Every link that acts on a subscription carries a token signed for that address and purpose
(:mod:`digest.signing`); forms also carry a signed form token and are refused when the browser says
they come from another site (:mod:`digest.web.security`: no cookie is needed), except the RFC 8058
one-click unsubscribe, which mail providers POST from their servers. Nothing changes on a GET or
HEAD. Redirects are relative and there are no trailing-slash redirects: no Location ever takes its
host from the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from digest.clock import today_in, utc_now
from digest.errors import StoreUnavailableError
from digest.settings import Settings
from digest.state.backend import Keeper, is_postgres
from digest.state.keeper import StoreKeeper
from digest.web import health, metrics
from digest.web.access_log import TokenRedactingFilter, redact_tokens_in_access_log
from digest.web.archive import Archive, without_self_links
from digest.web.confirm import Confirm
from digest.web.error_pages import ErrorPages
from digest.web.feed import Feed
from digest.web.forms import FORM_CROSS_SITE
from digest.web.front import Front
from digest.web.limits import WebLimits
from digest.web.live_preview import LivePreview
from digest.web.manage import Manage
from digest.web.pages import static_dir
from digest.web.security import BodyLimitMiddleware, SecurityHeadersMiddleware
from digest.web.subscribe import Signup
from digest.web.suggestions import Suggestions
from digest.web.unsubscribe import Unsubscribe
from digest.web.vote import Vote

# What callers and tests import from here, wherever it is defined.
__all__ = ["FORM_CROSS_SITE", "TokenRedactingFilter", "WebLimits", "create_app", "without_self_links"]

MAX_BODY_BYTES = 32 * 1024
LOCK_WAIT_SECONDS = 3.0  # a change waits this long for a CLI ``digest run``'s store lock, then "busy"


def page_routes(front: Front) -> list[BaseRoute]:
    """Every page of the front, by path and method."""
    live = LivePreview(front)
    feed = Feed(front)
    signup, confirm, manage = Signup(front, live), Confirm(front), Manage(front, feed.addresses)
    unsubscribe, archive = Unsubscribe(front), Archive(front)
    return [
        Route("/", signup.index, methods=["GET"]),
        Route("/subscribe", signup.subscribe, methods=["POST"]),
        Route("/check-inbox", signup.check_inbox, methods=["GET"]),
        Route("/preview", live.preview, methods=["POST"]),
        Route("/confirm", confirm.show, methods=["GET"]),
        Route("/confirm", confirm.post, methods=["POST"]),
        Route("/manage", manage.show, methods=["GET"]),
        Route("/manage", manage.post, methods=["POST"]),
        Route("/unsubscribe", unsubscribe.show, methods=["GET"]),
        Route("/unsubscribe", unsubscribe.post, methods=["POST"]),
        Route("/digest/{digest_id}", archive.digest, methods=["GET"]),
        Route("/feed/{token}.xml", feed.serve, methods=["GET"]),
        Route("/vote", Vote(front).show, methods=["GET"]),
        Route("/vote", Vote(front).post, methods=["POST"]),
        Route("/suggestion", Suggestions(front).post, methods=["POST"]),
        Route("/favicon.ico", archive.favicon, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
    ]


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    today: Callable[[], date] | None = None,
    limits: WebLimits | None = None,
    keeper: Keeper | None = None,
) -> Starlette:
    """The ASGI app. ``keeper`` is the process's store (``digest serve`` shares it with the cycle);
    an app built alone (tests, ``digest preview``, ``digest web``) keeps its own: on a PostgreSQL
    store, a few connections of its own (:mod:`digest.state.postgres.keeper`)."""
    if keeper is None and is_postgres(settings.store.url):
        from digest.state.postgres.keeper import PostgresKeeper  # psycopg, only for a PostgreSQL store

        keeper = PostgresKeeper(settings.store.url, settings.data_dir)
    keeper = keeper or StoreKeeper(settings.data_dir, write_wait_seconds=LOCK_WAIT_SECONDS)
    front = Front(
        settings, clock, today or (lambda: today_in(settings.schedule.timezone)), limits or WebLimits(), keeper
    )
    redact_tokens_in_access_log()
    errors = ErrorPages(front)

    def too_large() -> ASGIApp:
        return PlainTextResponse("The form is too large.\n", status_code=413)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        front.drain_departures_left_before()  # a restart after the database did not answer
        yield

    app = Starlette(
        lifespan=lifespan,
        routes=[
            *health.routes(settings, lambda: front.keeper.read(lambda store: store.cycles(last=50)), front.in_thread),
            *metrics.routes(settings, front.keeper.read, front.in_thread),
            *page_routes(front),
        ],
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES, too_large=too_large),
        ],
        exception_handlers={
            HTTPException: errors.http_error,
            StoreUnavailableError: errors.store_unavailable,
            Exception: errors.server_error,
        },
    )
    app.router.redirect_slashes = False  # Starlette's would take the Location's host from the Host header
    app.state.front = front
    return app
