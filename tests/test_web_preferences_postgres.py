"""Every test of ``test_web_preferences.py`` (the sign-up form's and manage page's choices: rhythm,
zone, hour, layout, cap, feed-only; forged and oversized choices; older links; many saves at once)
again on a PostgreSQL store, through :class:`~digest.state.postgres.keeper.PostgresKeeper` as
``digest web`` runs it. Imported unchanged; only ``settings`` differs (an empty database of a real
PostgreSQL, ``tests/postgres_server.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.settings import Settings
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_web_preferences import *  # noqa: F403 (every test of test_web_preferences.py, collected again)
from tests.test_web_preferences import in_chicago
from tests.web_support import make_settings


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink, postgres_url: str) -> Settings:  # noqa: F811
    """As ``test_web_preferences.py``'s, on an empty PostgreSQL database."""
    return in_chicago(make_settings(tmp_path / "data", smtp, store_url=postgres_url))


def test_these_tests_run_on_postgresql(settings: Settings, postgres_url: str) -> None:  # noqa: F811
    assert settings.store.url == postgres_url and settings.schedule.timezone == "America/Chicago"
