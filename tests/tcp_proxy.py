"""A TCP proxy on 127.0.0.1 that a test can freeze: a server that hangs without answering.

While frozen it accepts connections and holds every byte in both directions, as a database
whose host stopped answering but whose sockets are still open (no reset, no close) would look
to its clients; thawed, it forwards what it held, late, as TCP would.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit


class FreezableProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._stopped = threading.Event()
        self._refusing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._moving = 0  # pumps between their look at the flag and the end of what they forward

    @classmethod
    def before(cls, url: str) -> tuple[FreezableProxy, str]:
        """A proxy in front of the server of ``url``, and the same URL through the proxy."""
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        proxy = cls(parts.hostname, parts.port).start()
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        return proxy, urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> FreezableProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def freeze(self) -> None:
        """Hold everything from now on: returns once no pump is still forwarding, so no byte a
        client sends after this returns reaches the server (a pump in its ``select`` when the
        flag went up forwarded what came meanwhile: a one-click sent just after the freeze was
        committed, and the test saw it done "during the hang")."""
        self._frozen.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self._lock:
                if self._moving == 0:
                    return
            time.sleep(0.005)
        raise AssertionError("a pump kept forwarding after the freeze")

    def thaw(self) -> None:
        self._frozen.clear()

    def refuse(self) -> None:
        """Close every connection and every new one at once: a server that is down."""
        self._refusing.set()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def accept(self) -> None:
        self._refusing.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        other = {client: server, server: client}
        try:
            while not self._stopped.is_set():
                with self._lock:  # the look and the count together: freeze() waits for the moving
                    frozen = self._frozen.is_set()
                    self._moving += 0 if frozen else 1
                if frozen:
                    time.sleep(0.02)
                    continue
                try:
                    readable, _, _ = select.select([client, server], [], [], 0.05)
                    for sock in readable:
                        data = sock.recv(65536)
                        if not data:
                            return
                        other[sock].sendall(data)
                finally:
                    with self._lock:
                        self._moving -= 1
        except OSError:
            return
        finally:
            client.close()
            server.close()
