"""``POST /preview``: the sign-up form's live preview, and the index of recent papers it matches against.

The matching itself is :mod:`digest.web.preview`; this is the I/O around it: the index of the last
days' stored papers, built once per store change and day, and the preview computed in the preview
worker (:data:`digest.web.preview.WORKER`: one thread, a time budget per preview, a short queue),
never on the event loop, so other pages answer meanwhile.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.errors import DigestError, PreviewBusy
from digest.matching.rules import TEXT_FIELDS, ItemIndex
from digest.paths import STORE_FILE
from digest.state.subscriptions import MAX_RULES_CHARS
from digest.web.front import Front
from digest.web.pages import render_page
from digest.web.preview import PREVIEW_BUSY, PREVIEW_DAYS, WORKER, Preview, preview_rules

log = logging.getLogger(__name__)


class LivePreview:
    """The preview of rules, for the script's ``POST /preview`` and the form's own Preview button."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self._index_lock = threading.Lock()
        self._index_key: tuple[object, ...] | None = None
        self._index: ItemIndex | None = None

    def recent_index(self) -> ItemIndex:
        """The index of the last days' stored papers, rebuilt only when the store file or the day changes.

        Called in the preview worker; titles and abstracts are tokenized here, once, so that a
        preview's time budget goes to matching.
        """
        today = self.front.today()
        path = self.front.settings.data_dir / STORE_FILE
        try:
            stat = path.stat()
            key: tuple[object, ...] = (today, stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            key = (today, None)
        with self._index_lock:
            if self._index is None or key != self._index_key:
                start = today - timedelta(days=PREVIEW_DAYS - 1)
                index = ItemIndex(self.front.read_store().items_listed_between(start, today))
                for name in TEXT_FIELDS:
                    index.field(name)
                self._index, self._index_key = index, key
            return self._index

    async def preview_for(self, rules_text: str) -> tuple[Preview | None, tuple[str, ...]]:
        """Matches of the rules that parse, and the problems of those that do not (in the preview worker)."""
        try:
            return await self.front.bounded(WORKER.run(preview_rules, rules_text, self.recent_index))
        except PreviewBusy:
            return None, (PREVIEW_BUSY,)
        except DigestError as exc:
            log.error("preview unavailable: %s", exc)
            return None, ("The preview is not available right now.",)

    async def preview(self, request: Request) -> Response:
        front = self.front
        if not front.limits.ip_previews.allow(front.client_ip(request), front.now_seconds()):
            html = render_page(
                "_preview.html", preview=None, preview_error=("Slow down a little…",), preview_days=PREVIEW_DAYS
            )
            return HTMLResponse(html, status_code=429, headers={"cache-control": "no-store"})
        form = await request.form()
        rules_text = str(form.get("rules", ""))[: MAX_RULES_CHARS + 1]
        preview, problems = await self.preview_for(rules_text)
        html = render_page("_preview.html", preview=preview, preview_error=problems, preview_days=PREVIEW_DAYS)
        if problems == (PREVIEW_BUSY,):  # the script asks again after a second
            return HTMLResponse(html, status_code=503, headers={"cache-control": "no-store", "retry-after": "1"})
        return HTMLResponse(html, headers={"cache-control": "no-store"})
