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

TAG = "digest-test-blackhole"  # each rule's comment: a rule left by a killed test run is found by it


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
        else:
            remove_left_over_rules(listed.stdout)
    if reason:
        if os.environ.get("POSTGRES_TESTS") == "required":
            pytest.fail(f"{reason} (POSTGRES_TESTS=required)")
        pytest.skip(reason)


def remove_left_over_rules(listing: str) -> None:
    """Delete the rules an earlier run left (killed before its ``finally``), found by their tag."""
    for line in listing.splitlines():
        if line.startswith("-A INPUT ") and TAG in line:
            rule = line.split()[1:]  # "INPUT", then the rule as iptables -S prints it (no quotes in ours)
            removed = iptables("-D", *rule)
            assert removed.returncode == 0, f"iptables -D {' '.join(rule)}: {removed.stderr}"


@contextmanager
def blackholed(port: int) -> Iterator[None]:
    """Drop what goes to and comes from ``port`` on the loopback until the block ends. The rules
    are removed at its end whatever happened in it; a run killed meanwhile leaves them, and the next
    run's :func:`require_iptables` removes them."""
    tagged = ["-m", "comment", "--comment", TAG, "-j", "DROP"]
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), *tagged],
        ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port), *tagged],
    ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            inserted = iptables("-I", *rule)
            assert inserted.returncode == 0, f"iptables -I {' '.join(rule)}: {inserted.stderr}"
            added.append(rule)
        yield
    finally:
        failed = [rule for rule in added if iptables("-D", *rule).returncode != 0]
        assert not failed, f"could not remove {failed}: remove them by hand (iptables -S INPUT | grep {TAG})"
