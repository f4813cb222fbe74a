"""The MIME message: headers, encoding, and DKIM signing checked by dkimpy's verifier.

DNS is the one thing not run for real: the verifier is handed the TXT record of the test key
(``tests/data/dkim-test-key.txt``) instead of looking it up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import dkim
import pytest

from digest.errors import SettingsError
from digest.message import DkimKey, build_message, load_dkim_key
from digest.render import render_digest
from digest.settings import DkimSettings, load_settings
from tests.conftest import cli_env, run_cli
from tests.email_fixtures import LINKS, hostile_digest
from tests.servers import FakeHfApi, SmtpSink

DATA = Path(__file__).resolve().parent / "data"
KEY_FILE = DATA / "dkim-test-key.pem"
TXT_RECORD = (DATA / "dkim-test-key.txt").read_bytes().strip()


def dns(name: bytes, timeout: int = 5) -> bytes | None:
    return TXT_RECORD if name == b"mail._domainkey.digest.example.org." else None


def verified(raw: bytes) -> bool:
    return bool(dkim.verify(raw, dnsfunc=dns))


def message(dkim_key: DkimKey | None = None) -> EmailMessage:
    digest = hostile_digest()
    return build_message(
        render_digest(digest, LINKS),
        from_address="papers@digest.example.org",
        to_address="ada@example.org",
        to_name="Ada Lovelace",
        unsubscribe_url=LINKS.unsubscribe,
        list_id="digest.digest.example.org",
        now=datetime(2026, 11, 20, 7, tzinfo=UTC),
        dkim_key=dkim_key,
    )


def test_headers_and_parts_survive_the_wire() -> None:
    raw = message().as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = message_from_bytes(raw, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    rendered = render_digest(hostile_digest(), LINKS)
    assert parsed["Subject"] == rendered.subject
    assert parsed["Date"] == "Fri, 20 Nov 2026 07:00:00 +0000"
    assert parsed["Message-ID"].endswith("@digest.example.org>")
    assert parsed["List-Id"] == "Paper digest <digest.digest.example.org>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    assert html is not None and text is not None
    assert html.get_content().replace("\r\n", "\n") == rendered.html
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html["Content-Transfer-Encoding"] == "quoted-printable"


def test_dkim_signature_verifies_and_breaks_on_tampering() -> None:
    key = load_dkim_key(DkimSettings(selector="mail", private_key_file=KEY_FILE), "papers@digest.example.org")
    assert key is not None and key.domain == "digest.example.org"
    raw = message(key).as_bytes()
    assert verified(raw)
    signature = message_from_bytes(raw, policy=default_policy)["DKIM-Signature"]
    signed = {h.strip().lower() for h in signature.split("h=")[1].split(";")[0].split(":")}
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    assert not verified(raw.replace(b"unsub.t0k3n", b"unsub.other"))
    assert not verified(raw.replace(b"Subject: 3 new", b"Subject: 4 new"))
    assert "PRIVATE" not in repr(key) and "BEGIN" not in repr(key)


def test_without_a_key_nothing_is_signed() -> None:
    assert load_dkim_key(DkimSettings(), "a@b.example") is None
    assert "DKIM-Signature" not in message()


def test_bad_dkim_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"dkim: .*dkim.selector is needed"):
        load_settings(dkim={"private_key_file": str(KEY_FILE)})
    junk = tmp_path / "key.pem"
    junk.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(SettingsError, match=r"dkim\.private_key_file: not a PEM-encoded RSA private key"):
        load_dkim_key(DkimSettings(selector="s", private_key_file=junk), "a@b.example")
    with pytest.raises(SettingsError, match=r"dkim\.private_key_file: cannot read"):
        load_dkim_key(DkimSettings(selector="s", private_key_file=tmp_path / "missing.pem"), "a@b.example")


def test_digest_run_sends_dkim_signed_mail_through_smtp(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> None:
    """End to end: the bytes the SMTP server received verify, including the one-click headers."""
    env = cli_env(
        tmp_path / "data",
        hf_api,
        smtp,
        DIGEST_DKIM__SELECTOR="mail",
        DIGEST_DKIM__PRIVATE_KEY=KEY_FILE.read_text(),
    )
    assert run_cli("subscribe", "ada@example.org", "-k", "4090", env=env).returncode == 0
    result = run_cli("run", "--date", "2026-11-20", env=env)
    assert result.returncode == 0, result.stderr
    assert len(smtp.raw) == 1
    assert verified(smtp.raw[0])
    assert "BEGIN RSA" not in result.stdout + result.stderr


def test_digest_run_stops_on_a_bad_dkim_key(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> None:
    junk = tmp_path / "key.pem"
    junk.write_text("not a key")
    env = cli_env(
        tmp_path / "data", hf_api, smtp, DIGEST_DKIM__SELECTOR="mail", DIGEST_DKIM__PRIVATE_KEY_FILE=str(junk)
    )
    assert run_cli("subscribe", "ada@example.org", "-k", "4090", env=env).returncode == 0
    result = run_cli("run", "--date", "2026-11-20", env=env)
    assert result.returncode == 2
    assert "dkim.private_key_file" in result.stdout + result.stderr
    assert smtp.raw == []
