"""The delivery promises on a PostgreSQL store (issue 30: "the same delivery-promise and crash tests
run against both backends"): nothing twice, nothing lost, a crash (``kill -9``) or SIGTERM
mid-send, a hung or refusing SMTP server, an API that is down, and nobody who unsubscribed mailed.

The scenarios are the TinyDB ones, imported unchanged from ``test_end_to_end.py``,
``test_reliability.py`` and ``test_fault_delivery.py``: they run real ``digest`` processes through
the CLI, so each runs here again with the fixtures below, which point ``store.url`` at an empty
database of a real PostgreSQL (``tests/postgres_server.py``). Nothing else differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, run_cli
from tests.postgres_server import PostgresServer, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.servers import FakeHfApi, SmtpSink
from tests.test_end_to_end import DAY2, DAY3, EXPECTED, ids_in, third_day
from tests.test_end_to_end import test_api_down_loses_nothing as test_pg_api_down_loses_nothing
from tests.test_end_to_end import test_daily_cycle_keeps_every_delivery_promise as test_pg_daily_cycle_promises
from tests.test_end_to_end import test_dry_run_sends_and_records_nothing as test_pg_dry_run_records_nothing
from tests.test_end_to_end import (
    test_smtp_refusing_one_recipient_does_not_stop_the_others as test_pg_one_refusal_stops_nobody_else,
)
from tests.test_fault_delivery import (
    tarpit,  # noqa: F401 (fixture)
)
from tests.test_fault_delivery import (
    test_a_server_that_never_greets_fails_the_cycle_at_once_and_loses_nothing as test_pg_hung_server_loses_nothing,
)
from tests.test_fault_delivery import (
    test_sigterm_while_the_server_hangs_mid_data_stops_within_seconds as test_pg_sigterm_mid_data_stops,
)
from tests.test_reliability import subscribe_all
from tests.test_reliability import (
    test_a_refused_address_stays_pending_and_the_others_get_theirs as test_pg_refused_address_stays_pending,
)
from tests.test_reliability import (
    test_kill_9_mid_send_then_rerun_delivers_exactly_once as test_pg_kill_9_mid_send_delivers_exactly_once,
)
from tests.test_reliability import (
    test_sigterm_during_a_run_finishes_the_email_being_sent as test_pg_sigterm_finishes_the_email_in_flight,
)
from tests.test_reliability import (
    test_transient_smtp_refusals_and_dropped_connections_are_retried as test_pg_transient_refusals_are_retried,
)

SCENARIOS = (
    test_pg_api_down_loses_nothing,
    test_pg_daily_cycle_promises,
    test_pg_dry_run_records_nothing,
    test_pg_one_refusal_stops_nobody_else,
    test_pg_hung_server_loses_nothing,
    test_pg_sigterm_mid_data_stops,
    test_pg_refused_address_stays_pending,
    test_pg_kill_9_mid_send_delivers_exactly_once,
    test_pg_sigterm_finishes_the_email_in_flight,
    test_pg_transient_refusals_are_retried,
)


@pytest.fixture
def env(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path, postgres_url: str) -> dict[str, str]:  # noqa: F811
    """As the TinyDB scenarios' ``env``, on an empty PostgreSQL database."""
    environment = cli_env(tmp_path / "data", hf_api, smtp, DIGEST_STORE__URL=postgres_url)
    subscribe_all(environment)
    return environment


@pytest.fixture
def world(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path, postgres_url: str) -> dict[str, Any]:  # noqa: F811
    """As ``test_end_to_end``'s ``world``, on an empty PostgreSQL database."""
    hf_api.days[DAY3] = third_day(hf_api.days)
    environment = cli_env(tmp_path / "data", hf_api, smtp, DIGEST_STORE__URL=postgres_url)
    subscribe_all(environment)
    return {"env": environment, "api": hf_api, "smtp": smtp}


def test_the_scenarios_really_ran_on_postgresql(env: dict[str, str], postgres_url: str) -> None:  # noqa: F811
    """The fixtures above are the ones the imported scenarios get: their store is the database."""
    assert env["DIGEST_STORE__URL"] == postgres_url
    listed = run_cli("subscribers", env={**env, "COLUMNS": "300"})
    assert listed.returncode == 0 and all(address in listed.stdout for address in EXPECTED)
    assert not (Path(env["DIGEST_DATA_DIR"]) / "digest.json").exists(), "nothing went to a TinyDB file"
    assert len(SCENARIOS) == 10


def test_someone_who_unsubscribed_is_never_mailed_again_and_coming_back_resends_nothing(
    world: dict[str, Any],
) -> None:
    env, smtp = world["env"], world["smtp"]
    assert run_cli("run", "--date", DAY2, env=env).returncode == 0
    got_before = ids_in(smtp, "bob@example.org")
    assert got_before
    left = run_cli("unsubscribe", "bob@example.org", env=env)
    assert left.returncode == 0, left.stderr
    assert run_cli("run", "--date", DAY3, env=env).returncode == 0
    assert ids_in(smtp, "bob@example.org") == got_before, "nothing after unsubscribing"
    back = run_cli("subscribe", "bob@example.org", "-k", EXPECTED["bob@example.org"][0], env=env)
    assert back.returncode == 0, back.stderr
    assert run_cli("run", "--date", DAY3, env=env).returncode == 0
    every = ids_in(smtp, "bob@example.org")
    assert len(every) == len(set(every)), "coming back re-sends nothing already delivered"
