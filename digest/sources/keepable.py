"""Paper text every store can keep: no NUL and no lone surrogate, which a feed may send. Pure.

PostgreSQL's text and jsonb take neither (a paper with one failed its source's fetch there), and
no email, page or feed can show them. They are dropped once, where papers come in, so both stores,
and the ids, agree.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

from digest.models import Item

_UNKEEPABLE = re.compile("[\x00\ud800-\udfff]")  # a surrogate in a str is always a lone one


def keepable(text: str) -> str:
    return _UNKEEPABLE.sub("", text)


def keepable_item(item: Item) -> Item:
    """``item`` without NUL or lone surrogates in any of its text; the same object when it has none."""
    changes: dict[str, Any] = {}
    for field in fields(item):
        value = getattr(item, field.name)
        if isinstance(value, str) and _UNKEEPABLE.search(value):
            changes[field.name] = keepable(value)
        elif isinstance(value, tuple) and any(_UNKEEPABLE.search(part) for part in value):
            changes[field.name] = tuple(kept for kept in map(keepable, value) if kept)
    return replace(item, **changes) if changes else item
