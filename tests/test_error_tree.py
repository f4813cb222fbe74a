"""One error tree: every DigestError subclass in the package lives in digest.errors and is drawn there."""

from __future__ import annotations

import importlib
import pkgutil

import digest
from digest import errors
from digest.errors import DigestError


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _digest_error_subclasses() -> set[type]:
    for module in pkgutil.walk_packages(digest.__path__, "digest."):
        importlib.import_module(module.name)
    return {cls for cls in _subclasses(DigestError) if cls.__module__.startswith("digest")}


def test_every_digest_error_is_defined_in_digest_errors() -> None:
    elsewhere = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in _digest_error_subclasses())
    assert [name for name in elsewhere if not name.startswith("digest.errors.")] == []


def test_every_digest_error_is_drawn_in_the_tree() -> None:
    drawn = {line.lstrip("│├└─ ").split(" ")[0] for line in (errors.__doc__ or "").splitlines()}
    missing = sorted(cls.__name__ for cls in _digest_error_subclasses() if cls.__name__ not in drawn)
    assert missing == []
