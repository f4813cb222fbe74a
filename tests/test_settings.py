"""Settings from a TOML file and DIGEST_* variables; wrong values name their key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from digest.errors import SettingsError
from digest.settings import load_settings


def test_defaults_match_the_spec() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("data")
    assert settings.public_url == "http://localhost:8080"
    assert (settings.schedule.cron, settings.schedule.timezone) == ("0 7 * * *", "UTC")
    assert settings.smtp.host is None and settings.smtp.port == 587 and settings.smtp.security == "starttls"
    assert settings.smtp.from_address == "digest@localhost"
    hf = settings.sources.hf_papers
    assert (hf.enabled, hf.base_url, settings.lookback_days) == (True, "https://huggingface.co", 2)
    assert settings.http.timeout_seconds == 20
    assert (settings.web.host, settings.web.port) == ("127.0.0.1", 8080)


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config" / "digest.toml"
    config.parent.mkdir()
    config.write_text('public_url = "https://papers.example.org"\n[smtp]\nhost = "mail.example.org"\nport = 465\n')
    monkeypatch.setenv("DIGEST_SMTP__PORT", "2525")
    monkeypatch.setenv("DIGEST_SOURCES__HF_PAPERS__BASE_URL", "http://127.0.0.1:9/")
    settings = load_settings()
    assert settings.public_url == "https://papers.example.org"
    assert settings.smtp.host == "mail.example.org"
    assert settings.smtp.port == 2525
    assert settings.sources.hf_papers.base_url == "http://127.0.0.1:9"


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[schedule]\ntimezone = 'Europe/Paris'\n")
    monkeypatch.setenv("DIGEST_CONFIG_FILE", str(other))
    assert load_settings().schedule.timezone == "Europe/Paris"
    monkeypatch.setenv("DIGEST_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="DIGEST_CONFIG_FILE"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("DIGEST_SMTP__PORT", "many", "smtp.port"),
        ("DIGEST_SMTP__SECURITY", "tls", "smtp.security"),
        ("DIGEST_SCHEDULE__TIMEZONE", "Mars/Olympus", "schedule.timezone"),
        ("DIGEST_SCHEDULE__CRON", "every day", "schedule.cron"),
        ("DIGEST_LOOKBACK_DAYS", "0", "lookback_days"),
        ("DIGEST_HTTP__TIMEOUT_SECONDS", "0", "http.timeout_seconds"),
        ("DIGEST_PUBLIC_URL", "localhost", "public_url"),
    ],
)
def test_a_wrong_value_names_its_key(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value) and variable in str(caught.value)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "digest.toml").write_text("[smtp\nhost = 1\n")
    with pytest.raises(SettingsError, match=r"digest\.toml: not valid TOML"):
        load_settings()


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "digest.toml").write_text("[smtp]\nhots = 'x'\n")
    with pytest.raises(SettingsError, match=r"smtp.hots: unknown setting"):
        load_settings()


def test_password_never_shown_and_read_from_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "smtp_password"
    secret.write_text("hunter2\n")
    monkeypatch.setenv("DIGEST_SMTP__PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert settings.smtp.resolved_password() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_retention_must_reach_behind_every_day_still_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_RETENTION_DAYS", "10")
    monkeypatch.setenv("DIGEST_CATCHUP_DAYS", "14")
    with pytest.raises(SettingsError, match=r"retention_days \(10\) must be more than catchup_days"):
        load_settings()


def test_processes_starting_together_on_a_fresh_data_dir_share_one_whole_secret_key(tmp_path: Path) -> None:
    """Web replicas and workers on one fresh shared volume all generate the key at once: each must
    come away with the same, whole key, and no process with an error."""
    script = (
        "import sys; from pathlib import Path; from digest.settings import Settings; "
        "print(Settings(data_dir=Path(sys.argv[1])).resolved_secret_key())"
    )
    data_dir = tmp_path / "shared"
    starts = [
        subprocess.Popen([sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(12)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in starts}
    assert all(process.returncode == 0 for process in starts)
    assert keys == {(data_dir / "secret_key").read_text(encoding="utf-8").strip()} and len(keys.pop()) == 64
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret_key"], "no temporary file is left behind"
