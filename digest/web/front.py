"""What every page of the web front shares: settings, the store, link signing, the clock, the limits.

The pages (:mod:`~digest.web.subscribe`, :mod:`~digest.web.confirm`, :mod:`~digest.web.manage`, …) each
hold one :class:`Front` and go through it for the store (in a worker thread, or on the event loop
where the store allows it: TinyDB's memory, PostgreSQL's :class:`~digest.state.backend.LoopQueries`),
for signed links and for rendering, so each of them reads as what its page does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.clock import cron_trigger, next_fire
from digest.errors import StoreUnavailableError, TokenError
from digest.models import Subscriber
from digest.settings import Settings
from digest.signing import Purpose, Signer
from digest.state.answer import within
from digest.state.backend import Keeper, StoreBackend, leave
from digest.state.departures import keep_departure, pending_departures
from digest.web.forms import form_refusal
from digest.web.limits import FormLimits, WebLimits
from digest.web.pages import render_page
from digest.web.security import CSRF_FIELD, client_address, form_token, rate_key, trusted_networks

T = TypeVar("T")
log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0  # how often unsubscribes kept on disk are tried against the store again
STORE_THREADS = 4  # store calls in threads at a time with a bound (see in_thread): the keeper's connections


class Front:
    """The web front's shared state and the helpers every page uses."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime],
        today: Callable[[], date],
        limits: WebLimits,
        keeper: Keeper,
    ) -> None:
        self.settings = settings
        # The process's one in-memory store (``digest serve`` shares it with the cycle).
        self.keeper = keeper
        self.secret = settings.resolved_secret_key()
        self.signer = Signer(self.secret)
        self.clock = clock
        self.today = today
        self.limits = FormLimits(limits, settings.data_dir, self.now_seconds())
        self.trusted = trusted_networks(settings.web.trusted_proxies)
        self._draining: asyncio.Future[None] | None = None  # see leave
        self._store_turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        # Unsubscribes kept on disk (see leave) get a thread of their own: never behind store calls.
        self._departures = ThreadPoolExecutor(max_workers=1, thread_name_prefix="departures")

    def now_seconds(self) -> float:
        return self.clock().timestamp()

    # -- pages ------------------------------------------------------------------------------------
    def link(self, path: str, **query: str) -> str:
        """An absolute link for emails, built from ``public_url``."""
        return f"{self.settings.public_url}{path}" + (f"?{urlencode(query)}" if query else "")

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page; its forms get a fresh form token (no cookie: see :mod:`digest.web.security`).

        ``next_run`` is passed uncalled: only a page that says when the next digest goes out pays for it.
        """
        csrf = form_token(self.secret, self.now_seconds())
        html = render_page(
            template,
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            next_run=self.next_run,
            site_name=self.settings.site_name,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def next_run(self) -> str:
        """When the schedule fires next, as a person reads it: "Sat Nov 21 at 07:00 CET (Europe/Paris)".

        "The next daily run" alone leaves a new subscriber guessing whether it is in an hour or tomorrow,
        and in which time zone; "" if the schedule has no fire within a year.
        """
        schedule = self.settings.schedule
        fire = next_fire(cron_trigger(schedule.cron, schedule.timezone), self.clock())
        if fire is None:
            return ""
        zone = fire.tzname() or schedule.timezone
        named = zone if zone == schedule.timezone else f"{zone} ({schedule.timezone})"
        return f"{fire:%a %b} {fire.day} at {fire:%H:%M} {named}"

    def message(self, title: str, text: str, status: int, **extra: Any) -> HTMLResponse:
        return self.page("message.html", status=status, title=title, text=text, **extra)

    def bad_link(self, exc: TokenError, purpose: str) -> HTMLResponse:
        if exc.expired and purpose == "confirm":
            text = "This confirmation link has expired. Sign up again and you will get a fresh one."
        else:
            text = "This link is not valid. Please use the latest link from your email, copied in full."
        return self.message("This link does not work", text, 400, show_home=True)

    @staticmethod
    def retry_later(response: Response) -> Response:
        """A 503 page that shows its form again (with :data:`~digest.web.forms.BUSY`), so "try again" has its button."""
        response.headers["retry-after"] = "30"
        return response

    # -- requests ---------------------------------------------------------------------------------
    def form_problem(self, request: Request, form: FormData) -> str | None:
        """Why a form post is refused (another site sent it, or its form token is not ours or too old)."""
        return form_refusal(request.headers, form, self.secret, self.settings.public_url, self.now_seconds())

    def client_ip(self, request: Request) -> str:
        """The client's rate-limit bucket: its IP (X-Forwarded-For only from ``web.trusted_proxies``)."""
        peer = request.client.host if request.client else None
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        return rate_key(client_address(peer, forwarded, self.trusted))

    def token_data(self, purpose: Purpose, token: str | None) -> dict[str, Any]:
        if not token:
            raise TokenError("this link is incomplete")
        return self.signer.verify(purpose, token)

    async def link_holder(self, request: Request, purpose: Purpose) -> tuple[str, str, Subscriber | None] | Response:
        """A signed link's token, the address it was issued to and that subscriber (None once they
        left), or the page that says why the link cannot be used."""
        token = request.query_params.get("token")
        try:
            email = str(self.token_data(purpose, token)["e"])
        except TokenError as exc:
            return self.bad_link(exc, purpose)
        assert token is not None
        return token, email, await self.subscriber(email)

    # -- the store --------------------------------------------------------------------------------
    async def write(
        self,
        change: Callable[[StoreBackend], Any],
        departure: str | None = None,
        undo: Callable[[StoreBackend], Any] | None = None,
    ) -> Any:
        """Run ``change`` on the shared store (by the keeper's writer thread): journalled and fsynced
        before it returns, also while this process's cycle sends; :class:`~digest.errors.CycleLockedError`
        only if another process (a CLI ``digest run``) holds the file lock for the keeper's
        ``write_wait_seconds``: the person is asked to try again shortly."""
        submitted = self.keeper.submit(change, departure)
        if self.keeper.answer_seconds is None:
            return await asyncio.wrap_future(submitted)
        try:  # shielded: a change under way past the bound (see bounded) is made when the store answers
            return await self.bounded(asyncio.shield(asyncio.wrap_future(submitted)))
        except (StoreUnavailableError, asyncio.CancelledError):
            # The person was told "try again" (or left): a change still queued is dropped, one
            # under way is followed by ``undo`` if it was made and answered truthy.
            if not submitted.cancel() and undo is not None:
                submitted.add_done_callback(lambda done: self._undo_after(done, undo))
            raise

    def _undo_after(self, done: Future[Any], undo: Callable[[StoreBackend], Any]) -> None:
        if done.cancelled() or done.exception() is not None or not done.result():
            return
        try:
            self.keeper.submit(undo)
        except RuntimeError as exc:  # the keeper closed meanwhile (a shutdown)
            log.warning("a change made after its request gave up could not be undone: %s", exc)

    async def read(self, fn: Callable[[StoreBackend], T]) -> T:
        """``fn`` on the shared store: at once when memory is current and no lock is taken
        (:meth:`~digest.state.keeper.StoreKeeper.read_now`), else in a worker thread."""
        done, value = self.keeper.read_now(fn)
        if done:
            return value  # type: ignore[return-value]
        return await self.in_thread(self.keeper.read, fn)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, for work that reads the store: :meth:`bounded`. A call
        a hung server never answers keeps its thread, so with a bound (PostgreSQL) at most
        :data:`STORE_THREADS` calls take a thread at a time and the others wait on the event loop:
        a flood during a hang cannot take the thread pool every other page needs (static files, the
        archive, rule checks). A call still waiting for its turn at the bound is dropped."""
        if self.keeper.answer_seconds is None:
            return await run_in_threadpool(fn, *args)
        turns = self._store_turns_here()

        async def in_turn() -> T:
            async with turns:
                return await run_in_threadpool(fn, *args)

        return await within(in_turn(), self.keeper.answer_seconds, "the store", cancel=True)

    def _store_turns_here(self) -> asyncio.Semaphore:
        """The turns of the running event loop (a test may serve the same app on a new loop)."""
        loop = asyncio.get_running_loop()
        if self._store_turns is None or self._store_turns[0] is not loop:
            self._store_turns = (loop, asyncio.Semaphore(STORE_THREADS))
        return self._store_turns[1]

    async def bounded(self, work: Awaitable[T]) -> T:
        """``work``'s result, or a :class:`~digest.errors.StoreUnavailableError` once the store has not
        answered within the keeper's ``answer_seconds`` (PostgreSQL: a server that hangs without
        answering): the person gets a "try again" page (:mod:`digest.web.error_pages`) at the
        bound, and ``work`` goes on in the background (:func:`digest.state.answer.within`)."""
        seconds = self.keeper.answer_seconds
        if seconds is None:
            return await work
        return await within(work, seconds, "the store")

    async def subscriber(self, email: str) -> Subscriber | None:
        """The person ``email`` names, or None: on the event loop where the store can
        (:class:`~digest.state.backend.LoopQueries`), else :meth:`read`."""
        if self.keeper.loop_queries is not None:
            return await self.keeper.loop_queries.subscriber(email)
        return await self.read(lambda store: store.subscriber(email))

    async def subscriber_with_votes(self, email: str) -> tuple[Subscriber | None, dict[str, int]]:
        """:meth:`subscriber` and their votes (paper id → +1 or -1, oldest first), in one read."""
        if self.keeper.loop_queries is not None:
            return await self.keeper.loop_queries.subscriber_with_votes(email)
        return await self.read(lambda store: (store.subscriber(email), store.votes(email)))

    async def leave(self, email: str) -> bool:
        """Unsubscribe ``email`` (:func:`leave`), committed before it returns; True if they were
        subscribed."""
        if self.keeper.loop_queries is None:
            return bool(await self.write(lambda store: leave(store, email), departure=email))
        try:
            return await self.keeper.loop_queries.leave(email)
        except Exception as exc:  # any: an unsubscribe is never refused
            # Never refused: the database is away or did not answer in time, so the departure is
            # kept on this machine's disk (fsynced; digest.state.departures) and applied when the
            # database answers: by this process's drain, by a worker on the same disk before its next
            # email, and by any store opened on it. A one-click is not retried by a mail provider.
            await asyncio.get_running_loop().run_in_executor(self._departures, self._keep_departure, email)
            log.warning("unsubscribe of a subscriber kept on disk until the store answers: %s", exc)
            self._drain_departures_soon()
            return True

    def _keep_departure(self, email: str) -> None:
        keep_departure(self.settings.data_dir, email, datetime.now(UTC))

    def drain_departures_left_before(self) -> None:
        """At start (the app's lifespan): unsubscribes kept on disk before a restart (see
        :meth:`leave`) are applied as soon as the database answers, as if just kept."""
        if self.keeper.loop_queries is not None and pending_departures(self.settings.data_dir):
            self._drain_departures_soon()

    def _drain_departures_soon(self) -> None:
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain_departures())

    async def _drain_departures(self) -> None:
        """Apply the departures kept on disk once the store answers; tried every
        :data:`DRAIN_SECONDS` until the file is gone (one call at a time, however long it waits)."""
        while pending_departures(self.settings.data_dir):
            await asyncio.sleep(DRAIN_SECONDS)
            try:
                taken = await run_in_threadpool(self.keeper.read, lambda store: store.take_departures())
            except Exception as exc:  # any: the drain must outlive whatever the store or the disk does
                log.warning("unsubscribes kept on disk wait for the store: %s", exc)
                continue
            log.info("applied %d unsubscribe(s) kept on disk while the store did not answer", taken)

    def read_store(self) -> StoreBackend:
        """The shared in-memory store, read again first if another process wrote (call it in a
        worker thread). Pages only read from it: every change goes through :meth:`write`."""
        return self.keeper.store()
