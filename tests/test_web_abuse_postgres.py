"""``test_web_abuse.py``'s attacks on the web front that run on a site, again on a PostgreSQL store
(the pages through :class:`~digest.state.postgres.keeper.PostgresKeeper`, as ``digest web`` runs
them): forged and replayed confirm links, a form posted from another site, a confirmation email that
carries no text from the form, one inbox however it is spelled, no redirect built from the request's
Host, a browser without cookies, SMTPUTF8.

Imported unchanged; only ``settings`` differs (an empty database of a real PostgreSQL, seeded with
the same papers). Left out: the ones about the TinyDB file (its lock held by a cycle, a crash of
its journal, readers beside a writer), ``digest serve``'s TinyDB keeper under concurrent
unsubscribes (on PostgreSQL: ``test_web_load_postgres.py``, two replicas while workers send), and
pure functions (client addresses, cross-site headers), which have no store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.models import Item
from digest.settings import Settings
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import SmtpSink
from tests.test_web_abuse import (  # noqa: F401 (fixtures, and the tests collected again here)
    client,
    clock,
    items,
    test_a_browser_without_cookies_can_sign_up_and_unsubscribe,
    test_a_form_posted_from_another_site_is_refused,
    test_a_non_ascii_address_is_mailed_with_smtputf8_when_the_server_offers_it,
    test_an_old_confirm_link_is_dead_once_the_address_unsubscribed,
    test_no_redirect_takes_its_host_from_the_request,
    test_opening_the_confirm_link_changes_nothing_until_confirm_is_pressed,
    test_the_confirm_button_needs_its_form_and_this_site,
    test_the_confirmation_email_carries_no_text_from_the_form,
    test_the_per_address_limit_counts_one_inbox_however_it_is_spelled,
    test_the_sign_up_redirects_to_a_page_that_names_the_address,
)
from tests.web_support import seeded_site


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink, items: list[Item], postgres_url: str) -> Settings:  # noqa: F811
    """As ``test_web_abuse.py``'s, on an empty PostgreSQL database."""
    return seeded_site(tmp_path / "data", smtp, items, postgres_url)


def test_these_attacks_run_on_postgresql(settings: Settings, postgres_url: str) -> None:  # noqa: F811
    assert settings.store.url == postgres_url
    assert not (settings.data_dir / "digest.json").exists()
