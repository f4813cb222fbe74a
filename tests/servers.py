"""Real local stand-ins for the outside world: an HTTP server speaking the Daily Papers API, and an
SMTP server (aiosmtpd) that keeps what it accepts. Both listen on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class ApiRequest:
    path: str
    query: dict[str, str]
    at: float


def send_answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """Write a whole HTTP answer: status line, headers, a Content-Length and the body."""
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass
class FakeHfApi:
    """Serves ``/api/daily_papers?date=&limit=&p=`` from ``days``; ``script`` queues special answers.

    Each scripted answer is ``(status, headers, body)`` and is used for the next request, whatever it
    is; with the script empty, the real data is served. ``down=True`` answers 503 to everything.
    """

    days: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    down: bool = False
    requests: list[ApiRequest] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> FakeHfApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append(ApiRequest(url.path, query, time.monotonic()))
                send_answer(self, *api.answer(url.path, query))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.script:
            return self.script.pop(0)
        if self.down:
            return 503, {"Content-Type": "text/plain"}, b"service unavailable"
        if path != "/api/daily_papers":
            return 404, {"Content-Type": "text/plain"}, b"not found"
        limit = int(query.get("limit", "50"))
        page = int(query.get("p", "0"))
        entries = self.days.get(query.get("date", ""), [])
        body = json.dumps(entries[page * limit : (page + 1) * limit]).encode()
        return 200, {"Content-Type": "application/json"}, body

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def free_port() -> int:
    """A free port for a server that binds it later (a subprocess, a container): see :func:`host_ports`."""
    return host_ports(1)[0]


_PICK = random.SystemRandom()  # not the global generator: a test that seeds it must not repeat ports


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections and port-0 binds."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def host_ports(count: int = 1) -> list[int]:
    """``count`` consecutive free ports below the kernel's ephemeral range, for a server (a
    subprocess, a container engine publishing a range) that binds them a while later.

    A port the kernel picks (a bind to port 0) is an ephemeral one: until the server binds it, any
    connection the tests open to 127.0.0.1 may take it as its source port (and hold it in TIME_WAIT
    for a minute), and the server's bind then fails (a container engine's range: "all ports are
    allocated"). Below the range only an explicit bind takes a port.
    """
    ceiling = ephemeral_port_floor() - count
    low = 20000 if ceiling > 21000 else 1024  # a machine whose ephemeral range starts low: what is left
    below_the_range = ceiling >= low + 100  # else (almost) no port below it: the kernel's pick, as before
    for _ in range(200):
        first = _PICK.randint(low, ceiling) if below_the_range else _kernel_port()
        if _all_free(range(first, first + count)):
            return list(range(first, first + count))
    raise AssertionError(f"no {count} consecutive free ports")


def _kernel_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _all_free(ports: range) -> bool:
    probes = [socket.socket() for _ in ports]
    try:
        for probe, port in zip(probes, ports, strict=True):
            probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        for probe in probes:
            probe.close()
    return True


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.sink.refuse_rcpt(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.sink.refuse_data()
        if refusal:
            return refusal
        if self.sink.delay_after is not None and len(self.sink.messages) >= self.sink.delay_after:
            # A slow server, not a stuck one: other connections go on, and a client that hangs up
            # meanwhile cancels this handler, so its message is not accepted (as it never heard 250).
            self.sink.delaying += 1
            try:
                await asyncio.sleep(self.sink.delay_seconds)
            finally:
                self.sink.delaying -= 1
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = message_from_bytes(raw, policy=default_policy)
        assert isinstance(message, EmailMessage)
        with self.sink.lock:
            self.sink.messages.append(message)
            self.sink.raw.append(raw)
            self.sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that records what it accepts and refuses on demand."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str | None, list[str]]] = []
        self.lock = threading.Lock()
        self.refuse_rcpt_for: dict[str, str] = {}  # address → reply, e.g. "550 5.1.1 no such user"
        self.data_replies: list[str] = []  # replies to the next DATA commands, e.g. "451 try later"
        self.delay_after: int | None = None
        self.delay_seconds = 0.0
        self.delaying = 0  # messages being held back by the delay right now
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=free_port())
        self.rcpt_hook: Callable[[str], str | None] | None = None

    def refuse_rcpt(self, address: str) -> str | None:
        if self.rcpt_hook is not None:  # a test watching (or refusing) each recipient as it is named
            hooked = self.rcpt_hook(address)
            if hooked:
                return hooked
        return self.refuse_rcpt_for.get(address.lower())

    def refuse_data(self) -> str | None:
        with self.lock:
            return self.data_replies.pop(0) if self.data_replies else None

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"].addresses[0].addr_spec.lower() == address.lower()]
