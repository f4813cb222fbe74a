"""A control character in a rule (a NUL, an escape, a bell) is refused where the rule is parsed,
so every way in says where it is: the forms (``test_web.py``, on both stores), the CLI and
``digest import`` (here, on TinyDB and on a real PostgreSQL, which cannot store a NUL at all)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.errors import RuleError
from digest.matching.rules import parse_rule
from digest.state.subscriptions import check_rules
from tests.conftest import cli_env, run_cli
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)


@pytest.mark.parametrize(
    ("rule", "column", "code"), [("gpu\x00x", 4, "0000"), ("\x1b[31mred", 1, "001B"), ("a\x07", 2, "0007")]
)
def test_a_control_character_is_refused_at_its_column(rule: str, column: int, code: str) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rule(rule)
    assert refused.value.column == column and f"U+{code}" in refused.value.reason


def test_a_tab_is_whitespace_not_a_control_character() -> None:
    assert parse_rule("video\tdiffusion").canonical == parse_rule("video diffusion").canonical


def test_the_form_check_names_the_line_and_column() -> None:
    assert check_rules("gpu\nvideo\x00diffusion").errors == (
        "Line 2, column 6: remove the control character U+0000 (in “video\x00diffusion”)",
    )


@pytest.mark.parametrize("store", ["tinydb", "postgresql"])
def test_digest_import_refuses_a_rule_with_a_nul_and_imports_nothing(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if store == "postgresql" else "tinydb:"
    env = cli_env(tmp_path / "data", None, None, DIGEST_STORE__URL=url)
    people = tmp_path / "people.jsonl"
    people.write_text(
        json.dumps({"email": "ok@example.org", "rules": ["gpu"]})
        + "\n"
        + json.dumps({"email": "nul@example.org", "rules": ["video\u0000diffusion"]})
        + "\n"
    )
    refused = run_cli("import", str(people), env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"{people}:2:" in refused.stderr and "U+0000" in refused.stderr and "nothing was imported" in refused.stderr
    assert "no subscribers yet" in run_cli("subscribers", env=env).stdout
