"""The MIME message: headers, encoding, and DKIM signing checked by dkimpy's verifier.

The bytes are written directly (no :class:`EmailMessage`), so every test reads them back with the
standard library's parser, the way a receiving server would. DNS is the one thing not run for real:
the verifier is handed the TXT record of the test key (``tests/data/dkim-test-key.txt``) instead of
looking it up.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import compat32
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import HeaderValueError, PermanentDeliveryError, SettingsError
from digest.mail.mailer import OutboxMailer, SmtpMailer, dot_stuffed
from digest.mail.message import DkimKey, OutgoingEmail, build_message, load_dkim_key, message_id
from digest.mail.render import RenderedDigest, render_digest
from digest.ops.cli import extract_html
from digest.settings import DkimSettings, SmtpSettings, load_settings
from digest.signing import Signer
from tests.conftest import STORE_URL_VARIABLE, cli_env, on_postgresql, run_cli
from tests.email_fixtures import LINKS, hostile_digest, html_reading, sample_digest
from tests.servers import FakeHfApi, SmtpSink, free_port

DATA = Path(__file__).resolve().parent / "data"
KEY_FILE = DATA / "dkim-test-key.pem"
TXT_RECORD = (DATA / "dkim-test-key.txt").read_bytes().strip()
NOW = datetime(2026, 11, 20, 7, tzinfo=UTC)
# A real one-click link: public URL + an itsdangerous token, longer than a header line.
LONG_UNSUBSCRIBE = "https://digest.example.org/unsubscribe?token=" + Signer("k" * 32).sign(
    "unsubscribe", "ada.lovelace@example.org"
)


def dns(name: bytes, timeout: int = 5) -> bytes | None:
    return TXT_RECORD if name == b"mail._domainkey.digest.example.org." else None


def verified(raw: bytes) -> bool:
    return bool(dkim.verify(raw, dnsfunc=dns))


def parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def message(dkim_key: DkimKey | None = None, **overrides: Any) -> OutgoingEmail:
    options: dict[str, Any] = {
        "digest_id": "0123abcd",
        "from_address": "papers@digest.example.org",
        "to_address": "ada@example.org",
        "to_name": "Ada Lovelace",
        "unsubscribe_url": LINKS.unsubscribe,
        "list_id": "digest.digest.example.org",
        "now": NOW,
        "dkim_key": dkim_key,
    }
    rendered = overrides.pop("rendered", None) or render_digest(hostile_digest(), LINKS)
    return build_message(rendered, **{**options, **overrides})


def rendered_with(subject: str = "1 new paper", html: str = "<p>x</p>", text: str = "x\n") -> RenderedDigest:
    return RenderedDigest(subject=subject, html=html, text=text, preheader="", papers_in_full=1)


def test_headers_and_parts_survive_the_wire() -> None:
    raw = message().as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert max(len(line) for line in body.split(b"\r\n")) <= 998
    assert raw.isascii()
    parsed = parse(raw)
    rendered = render_digest(hostile_digest(), LINKS)
    assert parsed["From"] == "Paper digest <papers@digest.example.org>"
    assert parsed["To"] == "Ada Lovelace <ada@example.org>"
    assert parsed["Subject"] == rendered.subject
    assert parsed["Date"] == "Fri, 20 Nov 2026 07:00:00 +0000"
    assert parsed["Message-ID"].endswith("@digest.example.org>")
    assert parsed["List-Id"] == "Paper digest <digest.digest.example.org>"
    assert parsed["List-Unsubscribe"] == f"<{LINKS.unsubscribe}>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    assert html is not None and text is not None
    assert html.get_content_charset() == "utf-8" and html["Content-Transfer-Encoding"] == "7bit"
    assert html_reading(html.get_content()) == html_reading(rendered.html)
    assert text.get_content() == rendered.text
    assert not parsed.defects and not any(p.defects for p in parsed.iter_parts())


def reference(rendered: RenderedDigest, to_name: str, unsubscribe_url: str) -> EmailMessage:
    """The same email built the standard library's way, to compare what a reader sees."""
    ref = EmailMessage()
    ref["From"] = "Paper digest <papers@digest.example.org>"
    ref["To"] = f"{to_name} <ada@example.org>"
    ref["Subject"] = rendered.subject
    ref["Date"] = "Fri, 20 Nov 2026 07:00:00 +0000"
    ref["List-Id"] = "Paper digest <digest.digest.example.org>"
    ref["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    ref["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    ref["Auto-Submitted"] = "auto-generated"
    ref["Precedence"] = "bulk"
    ref.set_content(rendered.text, charset="utf-8")
    ref.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return ref


def test_a_reader_sees_what_the_email_package_would_have_built() -> None:
    """Header by header and part by part, the direct bytes read back like an :class:`EmailMessage`."""
    rendered = render_digest(sample_digest(), LINKS)
    ours = parse(message(rendered=rendered, to_name="Ada", unsubscribe_url=LONG_UNSUBSCRIBE).as_bytes())
    theirs = parse(reference(rendered, "Ada", LONG_UNSUBSCRIBE).as_bytes())
    for name in ("From", "To", "Subject", "Date", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert ours[name] == theirs[name], name
    ours_text, theirs_text = ours.get_body(("plain",)), theirs.get_body(("plain",))
    assert ours_text is not None and theirs_text is not None
    # set_content ends a part with a line break when it has none; ours keeps the text as rendered.
    assert theirs_text.get_content() in (ours_text.get_content(), ours_text.get_content() + "\n")
    ours_html, theirs_html = ours.get_body(("html",)), theirs.get_body(("html",))
    assert ours_html is not None and theirs_html is not None
    # Ours writes the HTML's non-ASCII characters as references and breaks its long lines: the
    # same document, another spelling.
    assert html_reading(ours_html.get_content()) == html_reading(theirs_html.get_content())


def test_a_long_unsubscribe_link_stays_a_bare_url() -> None:
    """Mail providers read ``List-Unsubscribe`` as ``<URL>``; an RFC 2047-encoded URL is no link to them."""
    assert len(LONG_UNSUBSCRIBE) > 78
    raw = message(unsubscribe_url=LONG_UNSUBSCRIBE).as_bytes()
    assert f"List-Unsubscribe: <{LONG_UNSUBSCRIBE}>\r\n".encode() in raw
    assert b"=?" not in raw.split(b"List-Unsubscribe: ", 1)[1].split(b"\r\n", 1)[0]
    with pytest.raises(HeaderValueError, match="List-Unsubscribe"):
        message(unsubscribe_url=LINKS.unsubscribe + "\r\nBcc: eve@example.org")


def test_message_id_is_the_same_for_the_same_digest_and_person() -> None:
    first = message()
    assert message().as_bytes() == first.as_bytes()  # reproducible to the byte
    assert first.message_id == message_id("0123abcd", "ada@example.org", "digest.example.org")
    assert parse(first.as_bytes())["Message-ID"] == first.message_id
    assert first.message_id.startswith("<digest.0123abcd.") and first.message_id.endswith("@digest.example.org>")
    assert message(to_address="ADA@example.org").message_id == first.message_id
    assert message(to_address="bob@example.org").message_id != first.message_id
    assert message(digest_id="4567ef").message_id != first.message_id
    assert "ada" not in first.message_id


@settings(max_examples=150, deadline=None)
@given(rule=st.text(min_size=1, max_size=120))
def test_any_subject_reads_back_exactly(rule: str) -> None:
    """Rules are the subscriber's own text; the subject they go into must decode to the same string."""
    subject = f"3 new papers for “{rule}” and {rule}"
    raw = message(rendered=rendered_with(subject)).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b"List-Unsubscribe:"))
    parsed = parse(raw)
    assert parsed["Subject"] == subject
    assert parsed["Bcc"] is None and parsed["To"] == "Ada Lovelace <ada@example.org>"


@settings(max_examples=150, deadline=None)
@given(name=st.text(min_size=1, max_size=80).filter(lambda n: n.strip() == n))
def test_any_display_name_reads_back(name: str) -> None:
    """Exactly, except that line breaks and control characters (which readers refuse) become spaces."""
    raw = message(to_name=name).as_bytes()
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()
    to = parse(raw)["To"]
    assert to.addresses[0].addr_spec == "ada@example.org"
    expected = name if name.isprintable() else " ".join("".join(c if c.isprintable() else " " for c in name).split())
    assert display_name(raw) == expected


def display_name(raw: bytes) -> str:
    """The To name as RFC 2047 reads it.

    The default policy's address parser puts a space between adjacent encoded-words (the ones a
    long name is split into), which the RFC says to drop; :func:`decode_header` follows the RFC.
    """
    value = str(message_from_bytes(raw, policy=compat32)["To"])
    phrase = value.rpartition(" <")[0]
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    return str(parse(raw)["To"].addresses[0].display_name)


def test_html_goes_as_7bit_lines_of_the_same_document_and_text_as_base64_utf8() -> None:
    """A long line of text with non-ASCII characters: references on the wire, lines broken at
    spaces, read back as the same document; the text part stays exact UTF-8 in base64."""
    html = '<p class="a b" title="x y">' + "長い行 émigré " * 300 + "</p>\n"
    raw = message(rendered=rendered_with(html=html, text="é\r\nbare\rcr\n")).as_bytes()
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = parse(raw)
    part = parsed.get_body(("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "7bit"
    assert b"&#38263;&#12356;&#34892; &#233;migr&#233; " in raw
    assert html_reading(part.get_content()) == html_reading(html)
    text = parsed.get_body(("plain",))
    assert text is not None and text["Content-Transfer-Encoding"] == "base64"
    assert base64.b64decode(str(text.get_payload())) == "é\r\nbare\rcr\n".encode()  # no bare CR on the wire


@pytest.mark.parametrize(
    "html",
    [
        "<p>" + "長" * 200 + "</p>",  # 1,600 bytes of references and not one space
        '<p><a title="' + "word " * 300 + '">a title too long for a line</a></p>',  # spaces only in a value
        "<!--[if mso | IE]>" + "<td >" * 300 + "<![endif]-->",  # and in a conditional comment
    ],
)
def test_html_that_cannot_be_broken_into_lines_goes_as_base64(html: str) -> None:
    raw = message(rendered=rendered_with(html=html)).as_bytes()
    part = parse(raw).get_body(("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "base64"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert base64.b64decode(str(part.get_payload())) == html.encode("ascii", "xmlcharrefreplace")


def test_html_holding_the_boundary_goes_as_base64() -> None:
    first = message(rendered=rendered_with(html="<p>x</p>")).as_bytes()
    boundary = parse(first).get_boundary()
    assert boundary is not None
    raw = message(rendered=rendered_with(html=f"<p>--{boundary}</p>")).as_bytes()
    part = parse(raw).get_body(("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "base64"
    assert part.get_content() == f"<p>--{boundary}</p>"


def test_dkim_signature_verifies_and_breaks_on_tampering() -> None:
    key = load_dkim_key(DkimSettings(selector="mail", private_key_file=KEY_FILE), "papers@digest.example.org")
    assert key is not None and key.domain == "digest.example.org"
    raw = message(key).as_bytes()
    assert verified(raw)
    signature = parse(raw)["DKIM-Signature"]
    signed = {h.strip().lower() for h in signature.split("h=")[1].split(";")[0].split(":")}
    assert {"from", "subject", "message-id", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    assert not verified(raw.replace(b"unsub.t0k3n", b"unsub.other"))
    assert not verified(raw.replace(b"Subject: 3 new", b"Subject: 4 new"))
    body_start = raw.index(b"\r\n\r\n") + 100
    assert not verified(
        raw[:body_start] + (b"B" if raw[body_start : body_start + 1] != b"B" else b"C") + raw[body_start + 1 :]
    )
    assert "PRIVATE" not in repr(key) and "BEGIN" not in repr(key)


def test_without_a_key_nothing_is_signed() -> None:
    assert load_dkim_key(DkimSettings(), "a@b.example") is None
    assert "DKIM-Signature" not in parse(message().as_bytes())


def test_bad_dkim_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"dkim.selector: dkim.selector is needed"):
        load_settings(dkim={"private_key_file": str(KEY_FILE)})
    junk = tmp_path / "key.pem"
    junk.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(SettingsError, match=r"dkim\.private_key_file: not a PEM-encoded RSA private key"):
        load_dkim_key(DkimSettings(selector="s", private_key_file=junk), "a@b.example")
    with pytest.raises(SettingsError, match=r"dkim\.private_key_file: cannot read"):
        load_dkim_key(DkimSettings(selector="s", private_key_file=tmp_path / "missing.pem"), "a@b.example")


def test_outbox_writes_the_bytes_as_built(tmp_path: Path) -> None:
    built = message()
    with OutboxMailer(tmp_path / "outbox") as mailer:
        path = Path(mailer.send(built))
    assert path.read_bytes() == built.as_bytes()
    assert "ada@example.org" in path.name


def smtp_settings(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, security="none", from_address="papers@digest.example.org")


def test_smtp_hands_over_the_exact_bytes(smtp: SmtpSink) -> None:
    built = message()
    with SmtpMailer(smtp_settings(smtp.port)) as mailer:
        mailer.send(built)
    assert smtp.envelopes == [("papers@digest.example.org", ["ada@example.org"])]
    assert smtp.raw[0].rstrip(b"\r\n") == built.as_bytes().rstrip(b"\r\n")


def test_a_message_is_dot_stuffed_only_where_a_line_starts_with_a_dot(smtp: SmtpSink) -> None:
    """A digest has no line starting with "." (headers, base64, boundaries): it goes as it is, not
    copied; a message that has such lines is still stuffed, or a lone "." would end it early."""
    plain = message()
    assert dot_stuffed(plain.raw) is plain.raw
    dotted = replace(plain, raw=plain.raw.replace(b"\r\n\r\n", b"\r\n\r\n.\r\n..two dots\r\n.one\r\n", 1))
    with SmtpMailer(smtp_settings(smtp.port)) as mailer:
        mailer.send(plain)
        mailer.send(dotted)
    assert [raw.rstrip(b"\r\n") for raw in smtp.raw] == [plain.raw.rstrip(b"\r\n"), dotted.raw.rstrip(b"\r\n")]
    assert parse(smtp.raw[1]).get_body(("html",)) is not None


class _Recorder:
    """Records the envelope options and bytes of each message (SmtpSink does not keep the options)."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], list[str], bytes | None]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append((envelope.mail_options, envelope.rcpt_tos, envelope.original_content))
        return "250 OK"


@contextmanager
def smtp_server(smtputf8: bool) -> Iterator[tuple[_Recorder, int]]:
    handler = _Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_a_non_ascii_address_goes_with_smtputf8_or_is_refused_permanently() -> None:
    built = message(to_address="josé@example.org", to_name="José")
    assert built.smtputf8 and not message().smtputf8
    assert "\r\nTo: =?utf-8?b?Sm9zw6k=?= <josé@example.org>\r\n".encode() in built.as_bytes()  # RFC 6532
    with smtp_server(smtputf8=True) as (handler, port), SmtpMailer(smtp_settings(port)) as mailer:
        mailer.send(built)
    [(options, rcpt, raw)] = handler.received
    assert "SMTPUTF8" in options and rcpt == ["josé@example.org"]
    assert raw is not None and raw.rstrip(b"\r\n") == built.as_bytes().rstrip(b"\r\n")
    with smtp_server(smtputf8=False) as (handler, port), SmtpMailer(smtp_settings(port)) as mailer:
        with pytest.raises(PermanentDeliveryError, match=r"josé@example\.org"):
            mailer.send(built)  # this server cannot deliver to that address: no use retrying
        mailer.send(message())  # and the connection still serves the next subscriber
    assert [rcpt for _, rcpt, _ in handler.received] == [["ada@example.org"]]


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
    parsed = smtp.messages[0]
    assert parsed["List-Unsubscribe"].startswith("<https://digest.example.org/unsubscribe?token=")
    assert b"List-Unsubscribe: <https://digest.example.org/unsubscribe?token=" in smtp.raw[0]
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


def test_a_cycle_delivers_to_a_non_ascii_address_or_refuses_it_alone(
    hf_api: FakeHfApi, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """End to end: ``digest subscribe`` accepts ``josé@…``; the cycle must neither crash on it nor stop the others."""
    for smtputf8, expected_status in ((True, 0), (False, 1)):
        data = tmp_path / f"data-{smtputf8}"
        with smtp_server(smtputf8) as (handler, port):
            env = cli_env(
                data,
                hf_api,
                DIGEST_SMTP__HOST="127.0.0.1",
                DIGEST_SMTP__PORT=str(port),
                DIGEST_SMTP__SECURITY="none",
                DIGEST_SMTP__FROM_ADDRESS="papers@digest.example.org",
            )
            if on_postgresql(request.config):  # each round its own empty store, as its own data_dir on TinyDB
                env[STORE_URL_VARIABLE] = request.getfixturevalue("postgres_server").new_database()
            for address in ("josé@example.org", "ada@example.org"):
                assert run_cli("subscribe", address, "-k", "4090", "--name", "J\nX", env=env).returncode == 0
            result = run_cli("run", "--date", "2026-11-20", env=env)
        assert result.returncode == expected_status, result.stdout + result.stderr
        delivered = sorted(rcpt[0] for _, rcpt, _ in handler.received)
        assert delivered == (["ada@example.org", "josé@example.org"] if smtputf8 else ["ada@example.org"])
        assert all(b"To: J X <" in raw for _, _, raw in handler.received if raw is not None)
        if not smtputf8:
            assert "josé@example.org" in result.stdout + result.stderr


def test_the_demo_writes_the_html_part_as_a_plain_file(tmp_path: Path) -> None:
    """``digest demo`` saves the email's HTML next to it for a browser: as rendered, LF line ends."""
    rendered = render_digest(sample_digest(), LINKS)
    eml = tmp_path / "demo.eml"
    eml.write_bytes(message(rendered=rendered).as_bytes())
    html = extract_html(eml).read_bytes()
    assert b"\r" not in html and html.decode("utf-8") == rendered.html


def test_the_caller_works_while_the_server_reads_the_message(smtp: SmtpSink, caplog: pytest.LogCaptureFixture) -> None:
    """``while_waiting`` runs once the message is out and before the server accepts it (here it
    holds the message for a while), so a cycle can take the next email off the render process
    meanwhile; an error in it does not touch the delivery."""
    smtp.delay_after, smtp.delay_seconds = 0, 0.5
    seen: list[tuple[int, int]] = []

    def look() -> None:
        deadline = time.monotonic() + 5
        while smtp.delaying == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append((smtp.delaying, len(smtp.raw)))

    def fail() -> None:
        raise RuntimeError("broken work")

    with SmtpMailer(smtp_settings(smtp.port)) as mailer:
        mailer.send(message(), while_waiting=look)
        assert seen == [(1, 0)], "it ran while the server held the whole message, before accepting it"
        assert len(smtp.raw) == 1
        smtp.delay_after = None
        mailer.send(message())
        assert len(seen) == 1, "the work belongs to its message: the next one does not run it again"
        with caplog.at_level(logging.ERROR, logger="digest.mail.mailer"):
            mailer.send(message(), while_waiting=fail)
    assert len(smtp.raw) == 3
    assert "work done while waiting for the SMTP server failed" in caplog.text and "broken work" in caplog.text


def test_the_outbox_runs_the_callers_work_too(tmp_path: Path) -> None:
    ran: list[bool] = []
    with OutboxMailer(tmp_path / "outbox") as mailer:
        mailer.send(message(), while_waiting=lambda: ran.append(True))
    assert ran == [True]
