"""The web front served by ``digest serve``: an ASGI app (Starlette) built from settings."""

from __future__ import annotations

from starlette.applications import Starlette

from digest import health
from digest.settings import Settings


def create_app(settings: Settings) -> Starlette:
    return Starlette(routes=[*health.routes(settings)])
