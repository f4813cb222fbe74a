"""The suite's two passes: ``pytest`` on TinyDB, ``pytest --store postgresql`` on PostgreSQL.

``make test`` runs both. On the second, every test gets an empty database of its own as
``DIGEST_STORE__URL``: settings a test builds and the CLI it runs both land there, and nothing
is written to a TinyDB file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.settings import Settings
from digest.state.backend import is_postgres, open_backend
from tests.conftest import cli_env, on_postgresql, run_cli

SEEN: set[str] = set()


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_runs_on_the_pass_store(turn: int, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = Settings(data_dir=tmp_path / "data").store.url
    if on_postgresql(request.config):
        assert is_postgres(url)
        assert url not in SEEN, "a database of its own for every test"
        SEEN.add(url)
    else:
        assert url == "tinydb:"


def test_the_cli_a_test_runs_uses_the_pass_store(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data_dir = tmp_path / "data"
    added = run_cli("subscribe", "ada@example.org", "--keyword", "diffusion", env=cli_env(data_dir))
    assert added.returncode == 0, added.stderr
    settings = Settings(data_dir=data_dir)
    with open_backend(settings.store.url, data_dir, write=False) as store:
        assert [s.email for s in store.subscribers()] == ["ada@example.org"]
    assert (data_dir / "digest.json").exists() is not on_postgresql(request.config)


def test_the_demo_keeps_to_its_own_store_on_either_pass(tmp_path: Path) -> None:
    """``digest demo`` writes its email from a throw-away TinyDB store in ``data_dir/demo``, and
    never the store ``store.url`` names (on the PostgreSQL pass it once read that database, found
    no demo subscriber and wrote no email)."""
    data_dir = tmp_path / "data"
    demo = run_cli("demo", env=cli_env(data_dir))
    assert demo.returncode == 0, demo.stderr
    assert list((data_dir / "demo").rglob("*.eml")), demo.stdout
    settings = Settings(data_dir=data_dir)
    if is_postgres(settings.store.url):
        with open_backend(settings.store.url, data_dir, write=False) as store:
            assert store.subscribers() == [] and store.cycles() == [] and store.seen_count == 0
