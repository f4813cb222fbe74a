"""An aiosmtpd server in its own process (so it does not share a GIL with what it measures) that
accepts and discards mail and counts it. Prints its port, then serves until stdin closes."""

from __future__ import annotations

import socket
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Discard:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        return "250 OK"


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Discard()
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=10 * 1024 * 1024)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()
    print(handler.count, flush=True)


if __name__ == "__main__":
    main()
