"""Delivery that real relays accept: day/hour quotas kept across restarts, a per-second rate,
throttling replies waited out on their own budget, several connections, and PIPELINING.

Every test talks to aiosmtpd servers started here on 127.0.0.1; the quota test moves the cycle's
clock a day at a time (``digest.cycle.run.utc_now``), as four daily cycles would.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from digest.cycle import run as runner
from digest.cycle.run import run_once
from digest.mail.mailer import SmtpConnection
from digest.mail.quota import QUOTA_FILE, is_throttling
from digest.models import Subscriber
from digest.ops.status import Status, gather
from digest.settings import Settings, load_settings
from digest.sources.sample import SampleSource
from digest.state.backend import StoreBackend, open_backend
from digest.state.postgres.store import PostgresStore
from digest.state.store import Store, journaled_deliveries
from tests.conftest import on_postgresql, run_cli
from tests.servers import SmtpSink, _Handler, free_port

AS_OF = date(2026, 11, 20)  # a day of the bundled sample


class RelayHandler(_Handler):
    """The sink's handler, plus what real relays do: throttle (421 after ``limit`` MAIL commands in
    ``window`` seconds), offer PIPELINING, and note whether RCPT and DATA came with MAIL."""

    def __init__(self, sink: SmtpSink, pipelining: bool = False, limit: int | None = None, window: float = 1.0):
        super().__init__(sink)
        self.pipelining = pipelining
        self.limit, self.window = limit, window
        self.mail_times: list[float] = []
        self.throttled = 0
        self.in_one_flight: list[bool] = []
        self.peers: set[Any] = set()
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]] if self.pipelining else responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        now = time.monotonic()
        with self.lock:
            self.peers.add(session.peer)
            recent = [t for t in self.mail_times if t > now - self.window]
            if self.limit is not None and len(recent) >= self.limit:
                self.throttled += 1
                return "421 4.7.0 Too many messages, slow down"
            self.mail_times.append(now)
            # What the client sent with MAIL is already in the server's buffer when it pipelines.
            waiting = bytes(getattr(server._reader, "_buffer", b""))
            self.in_one_flight.append(b"RCPT TO:" in waiting and b"DATA\r\n" in waiting)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


def relay(handler_options: dict[str, Any]) -> tuple[SmtpSink, RelayHandler]:
    sink = SmtpSink()
    handler = RelayHandler(sink, **handler_options)
    sink.controller.loop.close()  # the sink's own controller never runs: its event loop is closed
    sink.controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    return sink.start(), handler


@pytest.fixture
def make_relay() -> Any:
    started: list[SmtpSink] = []

    def make(**options: Any) -> tuple[SmtpSink, RelayHandler]:
        sink, handler = relay(options)
        started.append(sink)
        return sink, handler

    yield make
    for sink in started:
        sink.stop()


def settings_for(tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, **smtp: str) -> Settings:
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGEST_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("DIGEST_SMTP__PORT", str(sink.port))
    monkeypatch.setenv("DIGEST_SMTP__SECURITY", "none")
    monkeypatch.setenv("DIGEST_RETRY__INITIAL_DELAY_SECONDS", "0.05")
    monkeypatch.setenv("DIGEST_RETRY__MAX_DELAY_SECONDS", "0.2")
    for key, value in smtp.items():
        monkeypatch.setenv(f"DIGEST_SMTP__{key.upper()}", value)
    return load_settings()


def subscribe(settings: Settings, count: int) -> list[str]:
    people = [f"reader{n:04d}@example.org" for n in range(count)]
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscribers(Subscriber(email, ("diffusion",)) for email in people)
    return people


def status_of(settings: Settings, now: datetime) -> Status:
    """What ``digest status`` gathers, from the store the settings name (TinyDB or PostgreSQL)."""
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return gather(settings, store, AS_OF, now)


def delivered(settings: Settings, people: list[str]) -> int:
    """How many of ``people`` the store's delivery ledger holds a digest for (each gets one per cycle here)."""
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        return sum(1 for ids in store.delivered_to(people, AS_OF - timedelta(days=30)).values() if ids)


def received(sink: SmtpSink) -> Counter[str]:
    return Counter(recipients[0] for _, recipients in sink.envelopes)


def test_2000_subscribers_under_500_a_day_get_their_digest_over_four_days_once_each(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, _ = make_relay()
    settings = settings_for(tmp_path, sink, monkeypatch, max_per_day="500")
    people = subscribe(settings, 2000)
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(runner, "utc_now", lambda: clock[0])

    sent_per_day = []
    for day in range(4):
        report = run_once(settings, AS_OF, sources=[SampleSource()])
        sent_per_day.append(report.sent)
        assert report.failed == 0 and report.ok
        left = 2000 - 500 * (day + 1)
        if left:
            assert f"{left} digest(s) wait for the next cycle: smtp.max_per_day (500 in a rolling 24 hours)" in (
                " ".join(report.errors)
            )
            # A restart an hour later (a new process reads the counts back) sends nothing more.
            clock[0] += timedelta(hours=1)
            again = run_once(settings, AS_OF, sources=[SampleSource()])
            assert again.sent == 0 and f"{left} digest(s) wait" in " ".join(again.errors)
            state = status_of(settings, clock[0])
            assert state.waiting is not None and state.waiting["count"] == left
            assert "smtp.max_per_day" in state.waiting["why"]
        clock[0] += timedelta(days=1)

    assert sent_per_day == [500, 500, 500, 500]
    counts = received(sink)
    assert sorted(counts) == people and set(counts.values()) == {1}  # nothing lost, nothing doubled
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:  # the ledger knows each got theirs
        assert all(store.delivered_ids(email) for email in people)
    # A fifth day has nothing left to send, and nobody waits any more.
    assert run_once(settings, AS_OF, sources=[SampleSource()]).sent == 0
    assert len(sink.envelopes) == 2000
    state = status_of(settings, clock[0])
    assert state.waiting is None and not state.pending
    mode = stat.S_IMODE(os.stat(settings.data_dir / QUOTA_FILE).st_mode)
    assert mode == 0o600


def test_the_hourly_window_rolls(tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sink, _ = make_relay()
    settings = settings_for(tmp_path, sink, monkeypatch, max_per_hour="3")
    subscribe(settings, 7)
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(runner, "utc_now", lambda: clock[0])
    assert run_once(settings, AS_OF, sources=[SampleSource()]).sent == 3
    clock[0] += timedelta(minutes=30)
    assert run_once(settings, AS_OF, sources=[SampleSource()]).sent == 0  # the same hour
    clock[0] += timedelta(minutes=32)
    assert run_once(settings, AS_OF, sources=[SampleSource()]).sent == 3
    clock[0] += timedelta(minutes=62)
    assert run_once(settings, AS_OF, sources=[SampleSource()]).sent == 1
    assert set(received(sink).values()) == {1} and len(received(sink)) == 7


def test_max_per_second_spaces_the_emails(tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sink, handler = make_relay()
    settings = settings_for(tmp_path, sink, monkeypatch, max_per_second="20")
    subscribe(settings, 12)
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert report.sent == 12
    # 1/20 s apart: 11 gaps, 0.55 s in all. Measured over the whole run, as the relay sees each
    # MAIL: one gap alone also carries how late a loaded machine woke its server's thread (and the
    # first email the connection's opening), which a run without spacing takes well under 0.1 s.
    times = handler.mail_times
    assert times[-1] - times[0] > 0.45, times


@pytest.mark.parametrize(("pipelining", "connections"), [(False, "1"), (True, "3")])
def test_throttling_replies_slow_the_sender_and_spend_no_retry_budget(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch, pipelining: bool, connections: str
) -> None:
    sink, handler = make_relay(limit=4, window=0.5, pipelining=pipelining)
    # No retry at all for real failures: everything that still arrives got past 421s by the throttle.
    monkeypatch.setenv("DIGEST_RETRY__ATTEMPTS", "1")
    monkeypatch.setenv("DIGEST_RETRY__SEND_BUDGET_SECONDS", "0")
    settings = settings_for(tmp_path, sink, monkeypatch, throttle_budget_seconds="60", connections=connections)
    people = subscribe(settings, 15)
    started = time.monotonic()
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert time.monotonic() - started < 60  # no hang
    assert handler.throttled >= 1
    assert report.sent == 15 and report.failed == 0
    assert sorted(received(sink)) == people and set(received(sink).values()) == {1}


def test_throttling_past_its_budget_leaves_the_rest_pending(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, handler = make_relay(limit=3, window=3600)
    settings = settings_for(tmp_path, sink, monkeypatch, throttle_budget_seconds="0.2")
    people = subscribe(settings, 8)
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert report.sent == 3 and report.failed == 0
    assert "5 digest(s) wait for the next cycle: the SMTP server kept asking to slow down" in " ".join(report.errors)
    state = status_of(settings, datetime.now(UTC))
    assert len(state.pending) == 5
    shown = run_cli("status", env={**os.environ, "COLUMNS": "300"}).stdout
    assert "5 digest(s) wait for the next cycle: the SMTP server kept asking to slow down" in shown
    handler.limit = None
    assert run_once(settings, AS_OF, sources=[SampleSource()]).sent == 5
    assert sorted(received(sink)) == people and set(received(sink).values()) == {1}


def test_throttling_replies_are_told_apart_from_mailbox_ones() -> None:
    assert is_throttling(421, "4.7.0 Too many messages, slow down")
    assert is_throttling(450, "4.2.1 rate limited, try again later")
    assert is_throttling(451, "4.7.0 Temporary System Problem. Try again later")
    assert not is_throttling(450, "4.2.0 mailbox unavailable")
    assert not is_throttling(550, "5.7.1 too many recipients")


@pytest.mark.parametrize("pipelining", [True, False])
def test_pipelining_sends_mail_rcpt_and_data_in_one_flight_when_offered(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    sink, handler = make_relay(pipelining=True)
    settings = settings_for(tmp_path, sink, monkeypatch, pipelining=str(pipelining).lower())
    people = subscribe(settings, 5)
    sink.refuse_rcpt_for["reader0002@example.org"] = "550 5.1.1 no such user"
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert report.sent == 4 and report.refused == 1
    assert sorted(received(sink)) == [p for p in people if p != "reader0002@example.org"]
    assert handler.in_one_flight == [pipelining] * 5
    # The refused address does not put the conversation out of step: every later email is whole.
    assert all(m.get_body(("html",)) is not None for m in sink.messages)


def test_digests_spread_over_several_connections_arrive_once_each(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    sink, handler = make_relay(pipelining=True)
    settings = settings_for(tmp_path, sink, monkeypatch, connections="4")
    people = subscribe(settings, 40)
    sink.refuse_rcpt_for["reader0007@example.org"] = "550 5.1.1 no such user"
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert report.sent == 39 and report.refused == 1 and report.failed == 1
    assert len(handler.peers) == 4
    counts = received(sink)
    assert sorted(counts) == [p for p in people if p != "reader0007@example.org"] and set(counts.values()) == {1}
    assert delivered(settings, people) == 39  # the ledger: exactly what was accepted
    if not on_postgresql(request.config):
        assert journaled_deliveries(settings.data_dir) == 39  # the at-most-once journal: exactly what was accepted
    # The next cycle sends nothing again, and retries only the refused address.
    again = run_once(settings, AS_OF, sources=[SampleSource()])
    assert again.sent == 0 and again.failed == 1 and len(sink.envelopes) == 39


def test_connections_that_drop_reconnect_on_their_own(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, _ = make_relay()
    settings = settings_for(tmp_path, sink, monkeypatch, connections="3")
    people = subscribe(settings, 12)
    sink.data_replies.extend(["421 4.3.2 shutting down this connection"] * 3)
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert report.sent == 12 and report.failed == 0
    assert sorted(received(sink)) == people and set(received(sink).values()) == {1}


# -- a real MTA offering PIPELINING: Debian's postfix, in a temp dir, relaying to an aiosmtpd sink -----


def wait_for_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


@pytest.fixture
def postfix(smtp: SmtpSink) -> Any:
    """Postfix listening on a free port of 127.0.0.1 with its config and queue under ``tmp_path``,
    relaying everything to the ``smtp`` sink and refusing ``refused@example.org`` itself (554)."""
    if shutil.which("postfix") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's postfix (.ci/run installs it) and root to start it")
    # Not under tmp_path: pytest makes that 0700, and postfix's daemons drop to the postfix user.
    root = Path(tempfile.mkdtemp(prefix="digest-postfix-"))
    root.chmod(0o755)
    conf, queue, data = root / "conf", root / "queue", root / "data"
    for directory in (conf, queue, data):
        directory.mkdir(parents=True)
    shutil.chown(data, "postfix", "postfix")
    port = free_port()
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        parts = line.split()
        if line[:1] not in ("", " ", "\t", "#") and len(parts) >= 8:
            if parts[:2] == ["smtp", "inet"]:
                parts[0] = f"127.0.0.1:{port}"
            parts[4] = "n"  # no chroot: the queue is not under /var/spool
            line = " ".join(parts)
        lines.append(line)
    (conf / "master.cf").write_text("\n".join(lines) + "\n")
    (conf / "main.cf").write_text(
        f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
myhostname = relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{smtp.port}
smtpd_recipient_restrictions = check_recipient_access inline:{{ refused@example.org=REJECT }},
    permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
"""
    )
    try:
        started = subprocess.run(["postfix", "-c", str(conf), "start"], capture_output=True, text=True, check=False)
        assert started.returncode == 0, started.stderr + (root / "maillog").read_text(errors="replace")
        wait_for_port(port)
        yield port
    finally:
        subprocess.run(["postfix", "-c", str(conf), "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_postfix_offers_pipelining_and_every_digest_goes_in_two_round_trips(
    tmp_path: Path, postfix: int, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    flights: list[str] = []
    original = SmtpConnection.pipelined_sendmail

    def spy(self: SmtpConnection, sender: str, to: str, msg: bytes, options: list[str]) -> None:
        flights.append(to)
        original(self, sender, to, msg, options)

    monkeypatch.setattr(SmtpConnection, "pipelined_sendmail", spy)
    monkeypatch.setenv("DIGEST_SMTP__PORT", str(postfix))
    settings = settings_for(tmp_path, smtp, monkeypatch, port=str(postfix), connections="2")
    people = subscribe(settings, 6)
    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(Subscriber("refused@example.org", ("diffusion",)))
    report = run_once(settings, AS_OF, sources=[SampleSource()])
    assert report.sent == 6 and report.refused == 1  # postfix's own 554, read in step with the flight
    assert sorted(flights) == sorted([*people, "refused@example.org"])
    deadline = time.monotonic() + 30
    while len(smtp.envelopes) < 6 and time.monotonic() < deadline:  # postfix relays them on
        time.sleep(0.1)
    assert sorted(received(smtp)) == people and set(received(smtp).values()) == {1}
    assert all(m.get_body(("html",)) is not None for m in smtp.messages)


def test_a_stop_with_several_connections_records_exactly_what_was_accepted(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    sink, _ = make_relay()
    settings = settings_for(tmp_path, sink, monkeypatch, connections="4")
    people = subscribe(settings, 60)
    stop = threading.Event()
    original = sink.refuse_data

    def stop_after_ten() -> str | None:  # runs as the server reads each DATA: a SIGTERM mid-cycle
        if len(sink.messages) >= 10:
            stop.set()
        return original()

    sink.refuse_data = stop_after_ten  # type: ignore[method-assign]
    report = run_once(settings, AS_OF, sources=[SampleSource()], stop=stop)
    assert report.stopped and 10 <= report.sent < 60 and report.pending == 60 - report.sent
    assert delivered(settings, people) == report.sent == len(sink.envelopes)
    if not on_postgresql(request.config):
        assert journaled_deliveries(settings.data_dir) == report.sent
    again = run_once(settings, AS_OF, sources=[SampleSource()])
    assert again.sent == 60 - report.sent
    counts = received(sink)
    assert sorted(counts) == people and set(counts.values()) == {1}


def test_a_store_write_that_fails_on_another_connection_fails_the_cycle(
    tmp_path: Path, make_relay: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from digest.errors import StoreWriteError

    sink, _ = make_relay()
    settings = settings_for(tmp_path, sink, monkeypatch, connections="3")
    subscribe(settings, 12)
    store_class: type[StoreBackend] = PostgresStore if on_postgresql(request.config) else Store
    recorded = store_class.record_note
    calls = []

    def record_note(self: StoreBackend, *args: Any) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise StoreWriteError("cannot append to deliveries.journal: the disk is full")
        recorded(self, *args)

    monkeypatch.setattr(store_class, "record_note", record_note)
    with pytest.raises(StoreWriteError):
        run_once(settings, AS_OF, sources=[SampleSource()])
    assert len(sink.envelopes) < 12  # sending stopped soon after, as with one connection
