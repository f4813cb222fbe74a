"""Faults on the way out: an SMTP server that never answers, a stop while it hangs, a frozen render
process. None of them may stall a cycle or make it ignore SIGTERM, and nothing may be lost or sent
twice: real ``digest`` processes against real servers on 127.0.0.1, and a real forked child."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

import digest.cycle.render_ahead as ahead_module
from digest.cycle.render_ahead import Ahead, can_fork
from digest.errors import TransientDeliveryError, UnresponsiveServerError
from digest.mail.mailer import SmtpMailer
from digest.retry import Retrier, RetryPolicy
from digest.settings import SmtpSettings
from tests.conftest import cli_env, run_cli
from tests.servers import FakeHfApi, SmtpSink
from tests.test_end_to_end import DAY1, DAY2, EXPECTED
from tests.test_reliability import PATIENCE, assert_exactly_once, start_cli, subscribe_all, wait_for

PARENT = os.getpid()
needs_fork = pytest.mark.skipif(not can_fork(), reason="the render process needs fork (Linux)")


class Tarpit:
    """A hung SMTP server: accepts TCP connections on 127.0.0.1 and never says a word."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        self.connections = 0

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def start(self) -> Tarpit:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed by stop
                return
            self.held.append(connection)
            self.connections += 1

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone does not
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    server = Tarpit().start()
    yield server
    server.stop()


@pytest.fixture
def env(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> dict[str, str]:
    environment = cli_env(tmp_path / "data", hf_api, smtp)
    subscribe_all(environment)
    return environment


# -- a hung SMTP server ---------------------------------------------------------------------------


def test_a_server_that_never_greets_fails_the_cycle_at_once_and_loses_nothing(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink, tarpit: Tarpit
) -> None:
    hung = {**env, "DIGEST_SMTP__PORT": str(tarpit.port), "DIGEST_SMTP__TIMEOUT_SECONDS": "2"}
    started = time.monotonic()
    result = run_cli("run", "--date", DAY2, env=hung)
    took = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    assert took < 20, f"took {took:.0f} s"  # it was one 2 s timeout per attempt: 15 attempts, 30 s and more
    assert tarpit.connections == 1, result.stderr  # a server that did not answer is not tried again this cycle
    assert f"SMTP server 127.0.0.1:{tarpit.port} did not answer within 2 s" in result.stderr
    assert "Traceback" not in result.stderr
    assert "sent 0" in result.stdout and f"failed {len(EXPECTED)}" in result.stdout
    status = run_cli("status", env=env)
    for address in EXPECTED:
        assert address in status.stdout  # all still pending

    rerun = run_cli("run", "--date", DAY2, env=env)  # the real server is back

    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])
    assert all(len(smtp.to(address)) == 1 for address in EXPECTED)


def test_sigterm_while_the_server_hangs_mid_data_stops_within_seconds(
    env: dict[str, str], hf_api: FakeHfApi, smtp: SmtpSink
) -> None:
    smtp.delay_after, smtp.delay_seconds = 1, 600.0  # the server takes the second email and never answers
    run = start_cli("run", "--date", DAY2, env={**env, "DIGEST_SMTP__TIMEOUT_SECONDS": "60"})
    try:
        wait_for(lambda: smtp.delaying == 1, "the second email to be in flight")
        started = time.monotonic()
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=PATIENCE)
        took = time.monotonic() - started
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()

    assert took < 15, f"took {took:.0f} s"  # a grace of 5 s for the answer, then it hangs up (was 60 s)
    assert run.returncode == 0, err  # a clean stop, as the README says
    assert "stopped early" in out and "hanging up" in err
    wait_for(lambda: smtp.delaying == 0, "the server to drop the email it never answered")
    assert len(smtp.messages) == 1  # the unanswered one was not taken, so it is not recorded either

    smtp.delay_after = None
    rest = run_cli("run", "--date", DAY2, env=env)
    assert rest.returncode == 0, rest.stderr
    assert_exactly_once(smtp, hf_api.days, [DAY1, DAY2])
    assert all(len(smtp.to(address)) == 1 for address in EXPECTED)


def email() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "papers@example.org", "ada@example.org", "hi"
    message.set_content("hello")
    return message


def test_a_stop_hangs_up_on_a_server_that_has_not_greeted_yet(tarpit: Tarpit) -> None:
    """hang_up (what a stop does after its grace) reaches a connection that is still being made."""
    settings = SmtpSettings(host="127.0.0.1", port=tarpit.port, security="none", timeout_seconds=60)
    with SmtpMailer(settings) as mailer:
        threading.Timer(0.5, mailer.hang_up).start()
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError) as raised:
            mailer.send(email())
        took = time.monotonic() - started
        assert not isinstance(raised.value, UnresponsiveServerError)  # a stop, not the server's fault
        with pytest.raises(TransientDeliveryError, match="stop was requested"):
            mailer.send(email())  # nothing more after a hang-up
    assert took < 10, f"took {took:.0f} s"
    assert tarpit.connections == 1


def test_time_lost_in_failed_attempts_counts_against_the_budget() -> None:
    retrier = Retrier(RetryPolicy(attempts=5, initial_delay=1.0, budget=5.0), wait=lambda _: False, unit=lambda: 0.0)
    assert retrier.pause(1, "first")  # 0.5 s of 5
    retrier.charge(4.4)  # an attempt that hung 4.4 s before it failed
    assert not retrier.pause(2, "second")  # 1 s more would overrun the budget


# -- a frozen render process ----------------------------------------------------------------------


def slow_square(n: int) -> tuple[int, int]:
    time.sleep(0.02)
    return n * n, os.getpid()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    os.kill(pid, signal.SIGKILL)  # do not leave it behind, whatever the test says
    return False


@needs_fork
def test_a_frozen_child_is_killed_after_the_stall_time_and_the_rest_is_done_here() -> None:
    results = []
    with Ahead(list(range(30)), slow_square, stall_seconds=1.0) as ahead:
        child = ahead._process.pid
        for item, result in ahead:
            results.append((item, result))
            if item == 2:
                os.kill(child, signal.SIGSTOP)
                frozen_at = time.monotonic()
        took = time.monotonic() - frozen_at
    assert [item for item, _ in results] == list(range(30))
    assert [value for _, (value, _) in results] == [n * n for n in range(30)]
    assert {pid for _, (_, pid) in results} == {child, PARENT}
    assert ahead.fell_back is not None and "no result for 1 s" in ahead.fell_back
    assert took < 1.0 + 5, f"took {took:.1f} s"  # the stall time, then under a second of work here
    assert gone(child), "the frozen render process was left behind"


@needs_fork
def test_a_child_frozen_halfway_through_a_result_is_killed_and_the_rest_is_done_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pipe is readable (half a result is in it), so waiting for readability is not enough."""
    real = ahead_module._send_frame

    def half_then_freeze(fd: int, message: object) -> None:
        if message == ("ok", (9, os.getpid())):  # item 3, in the child
            data = pickle.dumps(message)
            frame = ahead_module.HEADER.pack(len(data)) + data
            os.write(fd, frame[: len(frame) // 2])
            os.kill(os.getpid(), signal.SIGSTOP)
        real(fd, message)

    monkeypatch.setattr(ahead_module, "_send_frame", half_then_freeze)
    started = time.monotonic()
    with Ahead(list(range(6)), slow_square, stall_seconds=1.0) as ahead:
        child = ahead._process.pid
        results = list(ahead)
    took = time.monotonic() - started
    assert [value for _, (value, _) in results] == [n * n for n in range(6)]
    assert {pid for item, (_, pid) in results if item >= 3} == {PARENT}
    assert ahead.fell_back is not None and "after 3 item(s)" in ahead.fell_back
    assert took < 1.0 + 5, f"took {took:.1f} s"
    assert gone(child), "the frozen render process was left behind"


@needs_fork
def test_a_stop_ends_the_wait_for_a_frozen_child_at_once() -> None:
    """SIGTERM while the caller waits (stall time 60 s): the stop event ends the wait."""
    stop = threading.Event()
    results = []
    with Ahead(list(range(30)), slow_square, stall_seconds=60.0, stop=stop) as ahead:
        child = ahead._process.pid
        os.kill(child, signal.SIGSTOP)
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        for item, result in ahead:
            results.append((item, result))
            if stop.is_set():
                break  # as the send loop does
        took = time.monotonic() - started
    assert took < 5, f"took {took:.1f} s"
    assert [value for _, (value, _) in results] == [n * n for n in range(len(results))]
    assert ahead.fell_back is not None and "stop was requested" in ahead.fell_back
    assert gone(child), "the frozen render process was left behind"
