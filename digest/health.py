"""``GET /healthz``: the last cycle's time and outcome, for people, monitors and the container healthcheck."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from digest.errors import DigestError
from digest.settings import Settings
from digest.store import Store


def health_status(settings: Settings) -> tuple[int, dict[str, object]]:
    try:
        cycles = Store(settings.data_dir, writable=False).cycles(last=1)
    except DigestError as exc:
        return 503, {"status": "error", "error": str(exc)}
    if not cycles:
        return 200, {"status": "ok", "last_cycle": None}
    last = cycles[-1]
    body: dict[str, object] = {"status": "ok" if last.get("ok") else "failing", "last_cycle": last}
    return (200 if last.get("ok") else 503), body


def routes(settings: Settings) -> list[Route]:
    async def healthz(request: Request) -> JSONResponse:
        status, body = health_status(settings)
        return JSONResponse(body, status_code=status)

    return [Route("/healthz", healthz, methods=["GET"])]
