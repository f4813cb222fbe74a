"""``/digest/{id}``: a sent digest as a web page ("View in a browser"), and ``/favicon.ico``.

The link is signed for that one digest; the page is the email's HTML as archived, under a CSP
of its own (inline styles, remote images, no script at all).
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.errors import TokenError
from digest.paths import ARCHIVE_DIR
from digest.web.front import Front
from digest.web.pages import static_dir
from digest.web.security import ARCHIVE_CSP

DIGEST_ID = re.compile(r"[0-9a-f]{20}")
FAVICON = "favicon.svg"


def without_self_links(html: str, digest_id: str) -> str:
    """An archived digest as its web page: without the email's links to this very page.

    The archive is the email's HTML, whose "View in a browser" and "View online" links point here;
    in the browser they only reload the page. Each ``<a>`` whose ``href`` is this digest's archive
    URL goes, with the " · " that separated it from its neighbour, or its whole paragraph when it
    was alone in one. Matching the URL rather than a marker in the template keeps working for
    digests archived before, and whatever the email's wording.
    """
    link = rf'<a\b[^>]*\bhref="[^"]*/digest/{re.escape(digest_id)}\?[^"]*"[^>]*>(?:(?!</a>).)*</a>'
    separator = r"\s*(?:&#183;|&middot;|·)\s*"
    alone = rf"<p\b[^>]*>\s*{link}\s*</p>"
    return re.sub(rf"{alone}|{separator}{link}|{link}(?:{separator})?", "", html, flags=re.S)


class Archive:
    """Archived digests, read from the data directory in a worker thread."""

    def __init__(self, front: Front) -> None:
        self.front = front

    async def digest(self, request: Request) -> Response:
        digest_id = request.path_params["digest_id"]
        try:
            data = self.front.token_data("digest", request.query_params.get("token"))
        except TokenError as exc:
            return self.front.bad_link(exc, "digest")
        if not DIGEST_ID.fullmatch(digest_id) or data.get("d") != digest_id:
            return self.front.bad_link(TokenError("another digest"), "digest")
        path: Path = self.front.settings.data_dir / ARCHIVE_DIR / f"{digest_id}.html"
        try:
            html = await run_in_threadpool(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            return self.front.message(
                "Digest not found", "This digest is no longer kept on this server.", 404, show_home=True
            )
        headers = {"content-security-policy": ARCHIVE_CSP, "cache-control": "private, max-age=3600"}
        return HTMLResponse(without_self_links(html, digest_id), headers=headers)

    async def favicon(self, request: Request) -> Response:
        """Browsers ask for ``/favicon.ico`` on pages that name no icon (an archived digest): the SVG."""
        icon = await run_in_threadpool((static_dir() / FAVICON).read_bytes)
        return Response(icon, media_type="image/svg+xml", headers={"cache-control": "public, max-age=86400"})
