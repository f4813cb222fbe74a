"""Bounces and complaints: each digest's Return-Path names its subscriber (signed), and a real IMAP
server (Debian's dovecot, started here in a temp dir) holds real DSN (RFC 3464) and ARF (RFC 5965)
messages built with Python's email package. ``digest bounces`` suspends hard bounces and soft ones
in a row, unsubscribes complaints, through journalled changes that a ``doctor --repair`` keeps.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from digest.mail.bounces import parse_report, verp_address, verp_token
from digest.paths import STORE_FILE
from tests.conftest import cli_env, on_postgresql, pass_store, run_cli
from tests.servers import FakeHfApi, SmtpSink, free_port

DAY = "2026-11-20"
SECRET = "a test secret key that signs the bounce tokens"
PASSWORD = "bounce-box-password"
PEOPLE = {
    "hard@example.org": "video diffusion",
    "soft@example.org": "video diffusion",
    "twice@example.org": "video diffusion",
    "angry@example.org": "video diffusion",
    "fine@example.org": "video diffusion",
}


# -- reports, as MTAs and mailbox providers write them (RFC 3464 and RFC 5965 examples) -------------
def dsn(to: str, recipient: str, action: str, status: str, diagnostic: str) -> MIMEMultipart:
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.net"
    report["To"] = to
    report["Subject"] = "Delivery Status Notification (Failure)"
    report.attach(MIMEText(f"Your message to {recipient} could not be delivered.\n"))
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_message["Arrival-Date"] = "Fri, 20 Nov 2026 07:00:03 +0000"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    headers = MIMEText(f"From: papers@digest.example.org\nTo: {recipient}\nSubject: Your papers\n", "rfc822-headers")
    report.attach(headers)
    return report


def arf(to: str, recipient: str, return_path: str) -> MIMEMultipart:
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "staff@hotmail.example"
    report["To"] = to
    report["Subject"] = "FW: Your papers"
    report.attach(MIMEText("This is an email abuse report for an email message received from IP 192.0.2.1.\n"))
    feedback = Message()
    feedback["Feedback-Type"] = "abuse"
    feedback["User-Agent"] = "SomeGenerator/1.0"
    feedback["Version"] = "1"
    feedback["Original-Mail-From"] = f"<{return_path}>"
    feedback["Original-Rcpt-To"] = f"<{recipient}>"
    part = MIMEBase("message", "feedback-report")
    part.set_payload([feedback])
    report.attach(part)
    original = EmailMessage()
    original["Return-Path"] = f"<{return_path}>"
    original["From"] = "papers@digest.example.org"
    original["To"] = recipient
    original["Subject"] = "Your papers"
    original.set_content("the digest\n")
    report.attach(MIMEMessage(original))
    return report


def test_dsn_and_arf_are_read_as_hard_soft_and_complaint() -> None:
    token = verp_token(SECRET, "x@example.org")
    to = verp_address("bounces@digest.example.org", SECRET, "x@example.org")
    assert to == f"bounces+{token}@digest.example.org" and len(to.split("@")[0]) <= 64
    hard = parse_report(dsn(to, "x@example.org", "failed", "5.1.1", "550 5.1.1 user unknown"))
    assert [(r.kind, r.recipient, r.token) for r in hard] == [("hard", "x@example.org", token)]
    assert "5.1.1" in hard[0].detail and "user unknown" in hard[0].detail
    soft = parse_report(dsn(to, "x@example.org", "delayed", "4.2.2", "452 4.2.2 mailbox full"))
    assert [r.kind for r in soft] == ["soft"]
    # An ARF report goes to the feedback-loop address: the token is in the quoted Return-Path.
    complaint = parse_report(arf("abuse@digest.example.org", "x@example.org", to))
    assert [(r.kind, r.recipient, r.token) for r in complaint] == [("complaint", "x@example.org", token)]
    assert parse_report(MIMEText("hello, just a reply")) == []
    assert verp_token("another key", "x@example.org") != token  # the key signs it


# -- a real IMAP server ------------------------------------------------------------------------------
@pytest.fixture
def dovecot() -> Iterator[int]:
    """Dovecot on a free port of 127.0.0.1: one user, ``bounces``, with a Maildir in a temp dir."""
    if shutil.which("dovecot") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's dovecot-imapd (.ci/run installs it) and root to start it")
    root = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))  # not under tmp_path (0700): dovecot drops root
    root.chmod(0o755)
    for name in ("home", "run", "state"):
        (root / name).mkdir()
    shutil.chown(root / "home", "mail", "mail")
    (root / "passwd").write_text(f"bounces:{{PLAIN}}{PASSWORD}\n")
    port = free_port()
    (root / "dovecot.conf").write_text(
        f"""base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 8
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""
    )
    server = subprocess.Popen(["dovecot", "-F", "-c", str(root / "dovecot.conf")], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None and time.monotonic() < deadline, "dovecot did not start"
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def deliver_to_mailbox(port: int, *messages: Message) -> None:
    """Put the reports in the bounce mailbox as an MTA's local delivery would (IMAP APPEND)."""
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("bounces", PASSWORD)
    for message in messages:
        imap.append("INBOX", None, None, message.as_bytes())
    imap.logout()


def unseen(port: int) -> int:
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("bounces", PASSWORD)
    imap.select("INBOX")
    _, found = imap.search(None, "UNSEEN")
    imap.logout()
    return len(found[0].split())


def test_bounces_suspend_complaints_unsubscribe_and_a_repair_keeps_both(
    tmp_path: Path, hf_api: FakeHfApi, smtp: SmtpSink, dovecot: int, request: pytest.FixtureRequest
) -> None:
    password = tmp_path / "imap_password"
    password.write_text(PASSWORD + "\n")
    env = cli_env(
        tmp_path / "data",
        hf_api,
        smtp,
        DIGEST_SECRET_KEY=SECRET,
        DIGEST_BOUNCES__ADDRESS="bounces@digest.example.org",
        DIGEST_BOUNCES__IMAP_HOST="127.0.0.1",
        DIGEST_BOUNCES__IMAP_PORT=str(dovecot),
        DIGEST_BOUNCES__IMAP_SECURITY="none",
        DIGEST_BOUNCES__IMAP_USER="bounces",
        DIGEST_BOUNCES__PASSWORD_FILE=str(password),
    )
    for email, rule in PEOPLE.items():
        assert run_cli("subscribe", email, "-k", rule, env=env).returncode == 0
    ran = run_cli("run", "--date", DAY, env=env)
    assert ran.returncode == 0, ran.stderr
    # Each digest went out with its own signed envelope sender: what the receiving MTA makes the Return-Path.
    senders = {recipients[0]: sender for sender, recipients in smtp.envelopes}
    assert sorted(senders) == sorted(PEOPLE)
    for email, sender in senders.items():
        assert sender == verp_address("bounces@digest.example.org", SECRET, email)
    assert all(m["From"].addresses[0].addr_spec == "papers@digest.example.org" for m in smtp.messages)

    deliver_to_mailbox(
        dovecot,
        dsn(senders["hard@example.org"], "hard@example.org", "failed", "5.1.1", "550 5.1.1 user unknown"),
        *[dsn(senders["soft@example.org"], "soft@example.org", "delayed", "4.2.2", "452 mailbox full")] * 3,
        *[dsn(senders["twice@example.org"], "twice@example.org", "failed", "4.4.7", "timeout")] * 2,
        arf("abuse@digest.example.org", "angry@example.org", senders["angry@example.org"]),
        # Forged: names a subscriber but carries no valid token; changes nothing.
        dsn("bounces+aaaaaaaaaaaaaaaa@digest.example.org", "fine@example.org", "failed", "5.1.1", "forged"),
        MIMEText("Thanks for the digest! (a reply, not a report)"),
    )
    read = run_cli("bounces", env=env)
    assert read.returncode == 0, read.stderr
    assert "read 9 message(s)" in read.stdout and "suspended 2" in read.stdout and "unsubscribed 1" in read.stdout
    assert unseen(dovecot) == 0  # marked read once acted on
    assert run_cli("bounces", env=env).stdout.startswith("read 0 message(s)")

    def states() -> dict[str, bool]:
        with pass_store(tmp_path / "data", write=False) as store:
            return {s.email: s.active for s in store.subscribers()}

    expected = {
        "hard@example.org": False,
        "soft@example.org": False,
        "twice@example.org": True,
        "fine@example.org": True,
    }
    assert states() == expected  # angry@ is gone: a complaint unsubscribes
    listed = run_cli("subscribers", env={**env, "COLUMNS": "300"}).stdout
    assert "suspended: hard bounce: 5.1.1" in listed and "suspended: 3 soft bounces" in listed
    status = run_cli("status", env=env).stdout
    assert "suspended: hard@example.org" in status and "digest resume hard@example.org" in status

    if not on_postgresql(request.config):  # PostgreSQL has no file to damage, and refuses --repair
        # The changes are journalled: a damaged store repaired from its backup keeps them.
        store_file = tmp_path / "data" / STORE_FILE
        store_file.write_bytes(store_file.read_bytes()[:-50])
        repaired = run_cli("doctor", "--repair", env=env)
        assert repaired.returncode == 0, repaired.stderr
        assert states() == expected

    # Suspended people get nothing; resumed, they are sent to again.
    resumed = run_cli("resume", "hard@example.org", env=env)
    assert resumed.returncode == 0 and "resumed hard@example.org" in resumed.stdout
    assert states()["hard@example.org"] is True
    assert "suspended: hard@example.org" not in run_cli("status", env=env).stdout
    assert run_cli("resume", "nobody@example.org", env=env).returncode == 1


def test_soft_bounces_suspend_only_in_a_row(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from digest.mail.bounces import Report, apply_reports
    from digest.models import Subscriber

    token = verp_token(SECRET, "soft@example.org")
    soft = Report("soft", "soft@example.org", token, "4.2.2 mailbox full")
    day = datetime(2026, 11, 20, 7, tzinfo=UTC)
    with pass_store(tmp_path) as store:
        store.save_subscriber(Subscriber("soft@example.org", ("nerf",)))

        def bounce(at: datetime) -> list[str]:
            return apply_reports(store, tmp_path, SECRET, [soft], 3, at).suspended

        assert bounce(day) == [] and bounce(day + timedelta(days=1)) == []
        assert bounce(day + timedelta(days=10)) == []  # a week and more later: starts over at 1
        assert bounce(day + timedelta(days=11)) == []
        assert bounce(day + timedelta(days=12)) == ["soft@example.org"]
        person = store.subscriber("soft@example.org")
        assert person is not None and not person.active


def test_an_unreachable_or_unset_bounce_mailbox_is_one_clear_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data", DIGEST_BOUNCES__IMAP_SECURITY="none")
    unset = run_cli("bounces", env=env)
    assert unset.returncode == 2 and "bounces.imap_host is not set" in unset.stderr
    down = run_cli(
        "bounces", env={**env, "DIGEST_BOUNCES__IMAP_HOST": "127.0.0.1", "DIGEST_BOUNCES__IMAP_PORT": str(free_port())}
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "cannot reach IMAP 127.0.0.1" in down.stderr and len(down.stderr.strip().splitlines()) == 1
