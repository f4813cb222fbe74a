"""The pages for an unknown address, a wrong method and a server error: plain pages, never a stack trace."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.web.front import Front
from digest.web.pages import render_page
from digest.web.security import CSRF_FIELD, SECURITY_HEADERS

log = logging.getLogger(__name__)

TITLES = {404: "Page not found", 405: "Not allowed"}


class ErrorPages:
    """Starlette's exception handlers: :meth:`http_error` for HTTP errors, :meth:`server_error` for the rest."""

    def __init__(self, front: Front) -> None:
        self.front = front

    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        title = TITLES.get(status, "Something went wrong")
        return self.front.message(title, "There is nothing to see at this address.", status, show_home=True)

    async def store_unavailable(self, request: Request, exc: Exception) -> Response:
        """The store did not answer in time or could not be reached (a database that hangs or is
        away): a 503 that says to try again, with ``Retry-After``; the cause goes to the log, never to the page."""
        log.error("%s %s: the store is unavailable: %s", request.method, request.url.path, exc)
        text = "Our subscription list did not answer in time, so this may not have been done. "
        text += "Please try again in a minute."
        return self._plain_page("Please try again in a minute", text, 503, {"retry-after": "60"})

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """No stack trace to the browser: a plain page; the details go to the log (uvicorn logs it).

        Rendered without the shared page helpers, so an error in them still gets this page.
        """
        text = (
            "Something went wrong on our side, and what you sent may not have been saved. "
            "The error is logged for the operator; please try again later."
        )
        return self._plain_page("Something went wrong", text, 500)

    def _plain_page(self, title: str, text: str, status: int, headers: dict[str, str] | None = None) -> Response:
        html = render_page(
            "message.html",
            title=title,
            text=text,
            csrf="",
            csrf_field=CSRF_FIELD,
            show_home=True,
            site_name=self.front.settings.site_name,
        )
        return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
