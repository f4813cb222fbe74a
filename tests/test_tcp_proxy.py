"""The freezing proxy the hang tests stand behind: after ``freeze()`` returns, nothing passes."""

from __future__ import annotations

import socket
import threading
import time

from tests.tcp_proxy import FreezableProxy


def test_bytes_sent_just_after_a_freeze_wait_for_the_thaw() -> None:
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as upstream:

        def keep() -> None:
            connection, _ = upstream.accept()
            with connection:
                while data := connection.recv(1024):
                    received.append(data)

        reader = threading.Thread(target=keep, daemon=True)
        reader.start()
        proxy = FreezableProxy(*upstream.getsockname()).start()
        try:
            with socket.create_connection(("127.0.0.1", proxy.port)) as client:
                client.sendall(b"before")
                deadline = time.monotonic() + 5
                while not received and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert received == [b"before"]
                for attempt in range(20):  # the pump is mostly inside its select: the window this closes
                    proxy.freeze()
                    client.sendall(b"during%d" % attempt)
                    time.sleep(0.1)
                    assert received == [b"before"], "a byte sent after freeze() reached the server"
                    proxy.thaw()
                    deadline = time.monotonic() + 5
                    while len(received) < 2 and time.monotonic() < deadline:
                        time.sleep(0.01)
                    assert received[-1] == b"during%d" % attempt
                    received[:] = [b"before"]
        finally:
            proxy.stop()
