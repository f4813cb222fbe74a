"""Every packet to and from one port of 127.0.0.1 dropped: a peer gone without a word.

A proxy that stops forwarding (:mod:`tests.tcp_proxy`) still has a kernel that acknowledges each
byte, so its clients see a slow server, never a dead one. Only packets that are dropped show what
TCP keepalives and ``TCP_USER_TIMEOUT`` are for: a host powered off, a network cut. This needs root
and iptables (``.ci/run`` installs it); elsewhere the test is skipped, except where
``POSTGRES_TESTS=required``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30, check=False)


def require_iptables() -> None:
    """Skip (or fail, where the PostgreSQL tests are required) where no rule can be set."""
    reason = ""
    if os.geteuid() != 0:
        reason = "dropping packets needs root"
    elif shutil.which("iptables") is None:
        reason = "iptables is not installed (Debian's iptables package)"
    else:
        listed = iptables("-S", "INPUT")
        if listed.returncode != 0:
            reason = f"iptables cannot list its rules here: {listed.stderr.strip()}"
    if reason:
        if os.environ.get("POSTGRES_TESTS") == "required":
            pytest.fail(f"{reason} (POSTGRES_TESTS=required)")
        pytest.skip(reason)


@contextmanager
def blackholed(port: int) -> Iterator[None]:
    """Drop what goes to and comes from ``port`` on the loopback until the block ends (the rules
    are removed whatever happened, so nothing else on this host is left cut off)."""
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
        ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
    ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            inserted = iptables("-I", *rule)
            assert inserted.returncode == 0, f"iptables -I {' '.join(rule)}: {inserted.stderr}"
            added.append(rule)
        yield
    finally:
        for rule in added:
            iptables("-D", *rule)
