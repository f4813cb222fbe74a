"""The ports the container tests publish on: outside the range outgoing connections draw from."""

from __future__ import annotations

import socket

import pytest

from tests import servers
from tests.servers import ephemeral_port_floor, host_ports


def test_host_ports_are_consecutive_free_and_below_the_ephemeral_range() -> None:
    if ephemeral_port_floor() < 21100:
        pytest.skip("this machine's ephemeral range starts low: host_ports gives the kernel's ports")
    ports = host_ports(3)
    assert ports == list(range(ports[0], ports[0] + 3))
    assert all(port < ephemeral_port_floor() for port in ports)
    sockets = [socket.socket() for _ in ports]
    try:
        for probe, port in zip(sockets, ports, strict=True):
            probe.bind(("127.0.0.1", port))  # raises if it was not free
    finally:
        for probe in sockets:
            probe.close()


def test_an_outgoing_connection_never_takes_a_host_port() -> None:
    """The failure this avoids: a client's source port is drawn from the ephemeral range."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            assert client.getsockname()[1] >= ephemeral_port_floor()


def test_a_machine_whose_ephemeral_range_starts_low_still_gets_consecutive_free_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(servers, "ephemeral_port_floor", lambda: 1030)
    ports = host_ports(2)
    assert ports[1] == ports[0] + 1
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
