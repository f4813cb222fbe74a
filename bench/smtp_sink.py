"""An aiosmtpd server in its own process (so it does not share a GIL with what it measures) that
accepts and discards mail and counts it. Prints its port, then serves until stdin closes; each
line read from stdin prints the messages and bytes received since the last one (the bench asks
between a floor and a cycle, when nothing is being sent)."""

from __future__ import annotations

import socket
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Discard:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 OK"

    def take(self) -> str:
        counts = f"{self.count} {self.bytes}"
        self.count = self.bytes = 0
        return counts


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Discard()
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=10 * 1024 * 1024)
    controller.start()
    print(port, flush=True)
    for _ in sys.stdin:
        print(handler.take(), flush=True)
    controller.stop()
    print(handler.take(), flush=True)


if __name__ == "__main__":
    main()
