"""Each setting sits where it governs: ``lookback_days`` at the top, ``http.timeout_seconds`` in its
own section. The old keys under ``sources.hf_papers`` are read for one release, each with one
warning line that names the old key and the new one; given at both places, the new one wins."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from digest.errors import SettingsError
from digest.settings import Settings, load_settings
from tests.conftest import cli_env, run_cli

OLD_LOOKBACK, NEW_LOOKBACK = "sources.hf_papers.lookback_days", "lookback_days"
OLD_TIMEOUT, NEW_TIMEOUT = "sources.hf_papers.timeout_seconds", "http.timeout_seconds"
NEW_KEYS = "lookback_days = 6\n[http]\ntimeout_seconds = 6\n"
OLD_KEYS = "[sources.hf_papers]\nlookback_days = 1\ntimeout_seconds = 1\n"


def write_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "digest.toml").write_text(text)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "digest.settings"]


def test_the_new_keys_are_read_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_config(tmp_path, "lookback_days = 4\n[http]\ntimeout_seconds = 7.5\n")
    settings = load_settings()
    assert (settings.lookback_days, settings.http.timeout_seconds) == (4, 7.5)
    monkeypatch.setenv("DIGEST_LOOKBACK_DAYS", "5")
    monkeypatch.setenv("DIGEST_HTTP__TIMEOUT_SECONDS", "9")
    settings = load_settings()
    assert (settings.lookback_days, settings.http.timeout_seconds) == (5, 9.0)
    assert warnings(caplog) == []


def test_the_old_keys_in_the_file_still_count_and_are_named_with_their_new_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_config(
        tmp_path, "[sources.hf_papers]\nlookback_days = 4\ntimeout_seconds = 7.5\nbase_url = 'https://hf.example'\n"
    )
    settings = load_settings()
    assert (settings.lookback_days, settings.http.timeout_seconds) == (4, 7.5)
    assert settings.sources.hf_papers.base_url == "https://hf.example"  # the rest of the section is untouched
    lookback, timeout = warnings(caplog)
    assert OLD_LOOKBACK in lookback and f"is now {NEW_LOOKBACK} (DIGEST_LOOKBACK_DAYS)" in lookback
    assert OLD_TIMEOUT in timeout and f"is now {NEW_TIMEOUT} (DIGEST_HTTP__TIMEOUT_SECONDS)" in timeout
    assert all("\n" not in line for line in (lookback, timeout))


def test_the_old_keys_in_the_environment_still_count(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DIGEST_SOURCES__HF_PAPERS__LOOKBACK_DAYS", "3")
    monkeypatch.setenv("DIGEST_SOURCES__HF_PAPERS__TIMEOUT_SECONDS", "11")
    settings = load_settings()  # not refused as unknown variables
    assert (settings.lookback_days, settings.http.timeout_seconds) == (3, 11.0)
    lookback, timeout = warnings(caplog)
    assert "DIGEST_SOURCES__HF_PAPERS__LOOKBACK_DAYS" in lookback and "DIGEST_LOOKBACK_DAYS" in lookback
    assert "DIGEST_SOURCES__HF_PAPERS__TIMEOUT_SECONDS" in timeout and "DIGEST_HTTP__TIMEOUT_SECONDS" in timeout


@pytest.mark.parametrize(
    ("toml", "environment"),
    [
        (NEW_KEYS + OLD_KEYS, {}),
        (OLD_KEYS, {"LOOKBACK_DAYS": "6", "HTTP__TIMEOUT_SECONDS": "6"}),
        (NEW_KEYS, {"SOURCES__HF_PAPERS__LOOKBACK_DAYS": "1", "SOURCES__HF_PAPERS__TIMEOUT_SECONDS": "1"}),
    ],
    ids=["both-in-the-file", "old-in-the-file-new-in-the-environment", "new-in-the-file-old-in-the-environment"],
)
def test_given_at_both_places_the_new_key_wins_and_the_warning_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    toml: str,
    environment: dict[str, str],
) -> None:
    write_config(tmp_path, toml)
    for name, value in environment.items():
        monkeypatch.setenv(f"DIGEST_{name}", value)
    settings = load_settings()
    assert (settings.lookback_days, settings.http.timeout_seconds) == (6, 6.0)
    lookback, timeout = warnings(caplog)
    assert lookback.startswith(f"settings: {OLD_LOOKBACK} ") and f"is ignored: {NEW_LOOKBACK} " in lookback
    assert timeout.startswith(f"settings: {OLD_TIMEOUT} ") and f"is ignored: {NEW_TIMEOUT} " in timeout
    assert all("wins" in line for line in (lookback, timeout))


def test_a_wrong_value_at_the_old_key_names_the_old_key_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SOURCES__HF_PAPERS__LOOKBACK_DAYS", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "lookback_days: " in str(caught.value)
    assert f"the old {OLD_LOOKBACK} / DIGEST_SOURCES__HF_PAPERS__LOOKBACK_DAYS" in str(caught.value)


def test_settings_made_in_code_move_the_old_keys_without_changing_what_was_passed() -> None:
    sources = {"hf_papers": {"lookback_days": 3, "base_url": "https://hf.example"}}
    settings = Settings(sources=sources)  # type: ignore[arg-type]  # a dict, as pydantic accepts
    assert settings.lookback_days == 3 and settings.sources.hf_papers.base_url == "https://hf.example"
    assert sources == {"hf_papers": {"lookback_days": 3, "base_url": "https://hf.example"}}
    assert Settings(**Settings(lookback_days=4).model_dump()).lookback_days == 4  # the new layout round-trips


def test_the_cli_warns_once_per_old_key_on_stderr_and_runs(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path / "data", DIGEST_SOURCES__HF_PAPERS__LOOKBACK_DAYS="3", DIGEST_SOURCES__HF_PAPERS__TIMEOUT_SECONDS="5"
    )
    done = run_cli("status", env=env)
    assert done.returncode == 0, done.stderr
    named = [line for line in done.stderr.splitlines() if "sources.hf_papers." in line]
    assert len(named) == 2, done.stderr
    assert "is now lookback_days" in named[0] and "is now http.timeout_seconds" in named[1]
