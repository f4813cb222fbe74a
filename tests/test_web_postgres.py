"""Every test of ``test_web.py`` (sign-up, confirm, manage, unsubscribe and one-click, the archive,
previews, limits, errors) again on a PostgreSQL store: the web front through
:class:`~digest.state.postgres.keeper.PostgresKeeper`, as ``digest web`` runs it.

The tests are imported unchanged; only the ``settings`` fixture differs (an empty database of a
real PostgreSQL, ``tests/postgres_server.py``, seeded with the same papers). Left out, as they
are about the TinyDB file itself: a write while a cycle holds the store's file lock, and a
truncated ``digest.json``; the per-address sign-up limit is kept in the database there
(``signup_mails``), so its test's look at the limits file is left out too (the database's limit
is tested in ``test_store_postgres.py`` and across replicas in ``test_roles_postgres.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.models import Item
from digest.settings import Settings
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_web import *  # noqa: F403 (every test of test_web.py, collected again here)
from tests.test_web import (
    test_a_stranger_is_never_mailed_twice_within_the_window,
    test_a_write_while_a_cycle_holds_the_lock_answers_busy_and_loses_nothing,
    test_errors_are_plain_pages_without_stack_traces,
)
from tests.web_support import seeded_site

TINYDB_ONLY = (
    test_a_write_while_a_cycle_holds_the_lock_answers_busy_and_loses_nothing,
    test_errors_are_plain_pages_without_stack_traces,
    test_a_stranger_is_never_mailed_twice_within_the_window,
)
for _test in TINYDB_ONLY:
    del globals()[_test.__name__]


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink, items: list[Item], postgres_url: str) -> Settings:  # noqa: F811
    """As ``test_web.py``'s, on an empty PostgreSQL database."""
    return seeded_site(tmp_path / "data", smtp, items, postgres_url)


def test_these_tests_run_on_postgresql(settings: Settings, postgres_url: str) -> None:  # noqa: F811
    assert settings.store.url == postgres_url
    assert not (settings.data_dir / "digest.json").exists()
    assert "test_errors_are_plain_pages_without_stack_traces" not in globals()
