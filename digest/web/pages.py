"""The Jinja2 environment of the web pages and the confirmation email (``templates/web``).

Autoescaping is on for ``.html`` templates, so everything from a person or a feed is escaped unless
it was already made safe by :func:`digest.mail.highlight.mark`. Static files get a content hash in their
URL, so browsers may cache them for long and still see a new version at once.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from digest.mail.templates import templates_dir


def web_dir() -> Path:
    return templates_dir() / "web"


def static_dir() -> Path:
    return web_dir() / "static"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(web_dir())),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates do not change under a running service: no stat per page
    )
    env.globals["static"] = static_url
    return env


@lru_cache(maxsize=32)
def static_url(name: str) -> str:
    content = (static_dir() / name).read_bytes()
    return f"/static/{name}?v={hashlib.sha256(content).hexdigest()[:10]}"


def render_page(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)
