"""The look-ahead that renders digests in a forked child: results in order, and every way the child
can fail ends with the work done in the caller, nothing skipped and real errors raised there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digest.cycle.render_ahead import Ahead, can_fork, timed

PARENT = os.getpid()
ROOT = Path(__file__).resolve().parent.parent

needs_fork = pytest.mark.skipif(not can_fork(), reason="the render process needs fork (Linux)")


def square_with_pid(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


@needs_fork
def test_results_come_in_order_from_the_child() -> None:
    with Ahead(list(range(50)), square_with_pid) as ahead:
        results = list(ahead)
    assert [item for item, _ in results] == list(range(50))
    assert [value for _, (value, _) in results] == [n * n for n in range(50)]
    assert {pid for _, (_, pid) in results} - {PARENT}, "the work ran in another process"
    assert ahead.fell_back is None
    assert ahead.child_private_mb > 0


def scheduling_policy(_: int) -> tuple[int, int]:
    return os.sched_getscheduler(0), os.getpid()


@needs_fork
def test_the_child_does_not_preempt_the_caller_when_it_wakes() -> None:
    """SCHED_BATCH in the child only: the caller (the send loop) keeps the ordinary policy."""
    with Ahead([1, 2, 3], scheduling_policy) as ahead:
        results = [result for _, result in ahead]
    assert {policy for policy, pid in results if pid != PARENT} == {os.SCHED_BATCH}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_without_a_child_the_work_runs_here() -> None:
    with Ahead(list(range(5)), square_with_pid, use_child=False) as ahead:
        results = list(ahead)
    assert [value for _, (value, pid) in results] == [0, 1, 4, 9, 16]
    assert {pid for _, (_, pid) in results} == {PARENT}


def fails_at_seven(n: int) -> int:
    if n == 7:
        raise ValueError(f"bad item {n} in {'child' if os.getpid() != PARENT else 'parent'}")
    return n


@needs_fork
def test_an_error_in_the_work_is_raised_in_the_caller_at_its_item() -> None:
    seen: list[int] = []
    with Ahead(list(range(10)), fails_at_seven) as ahead, pytest.raises(ValueError, match="bad item 7 in parent"):
        for item, _ in ahead:
            seen.append(item)
    assert seen == list(range(7))
    assert ahead.fell_back is not None and "after 7 item(s)" in ahead.fell_back


def child_dies_at_three(n: int) -> tuple[int, int]:
    if n == 3 and os.getpid() != PARENT:
        os._exit(9)
    return square_with_pid(n)


@needs_fork
def test_a_child_that_dies_leaves_the_rest_to_the_caller() -> None:
    with Ahead(list(range(8)), child_dies_at_three) as ahead:
        results = list(ahead)
    assert [value for _, (value, _) in results] == [n * n for n in range(8)]
    assert {pid for item, (_, pid) in results if item >= 3} == {PARENT}
    assert ahead.fell_back is not None


def child_stalls_at_two(n: int) -> tuple[int, int]:
    if n == 2 and os.getpid() != PARENT:
        time.sleep(30)
    return square_with_pid(n)


@needs_fork
def test_a_stalled_child_is_stopped_and_the_caller_goes_on() -> None:
    with Ahead(list(range(5)), child_stalls_at_two, stall_seconds=0.5) as ahead:
        results = list(ahead)
    assert [value for _, (value, _) in results] == [0, 1, 4, 9, 16]
    assert ahead.fell_back is not None and "no result" in ahead.fell_back
    assert ahead._process is None


@needs_fork
def test_leaving_early_stops_the_child() -> None:
    with Ahead(list(range(10_000)), square_with_pid) as ahead:
        _, (_, child) = next(iter(ahead))
    assert child != PARENT
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(child, 0)


def test_timed_returns_the_result_and_its_seconds() -> None:
    result, seconds = timed(lambda n: n + 1)(1)
    assert result == 2 and seconds >= 0


@needs_fork
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """kill -9 of a cycle must not leave its render process behind (it holds the store lock's fd)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from digest.cycle.render_ahead import Ahead\n"
        "def hang(n):\n"
        "    time.sleep(60)\n"
        "    return os.getpid()\n"
        "ahead = Ahead([1, 2], hang).__enter__()\n"
        "print(ahead._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # running
        parent.kill()
        parent.wait(10)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        raise AssertionError("the render process outlived its parent")


@needs_fork
def test_results_taken_early_come_in_order_and_none_is_lost() -> None:
    """prefetch (called by the send loop while an SMTP server reads an email) takes the next result
    off the pipe if it is there; the iterator then gives it in its turn, and the child's last word
    (its memory) is still read after the last result."""
    taken_early = 0
    results = []
    with Ahead(list(range(200)), square_with_pid) as ahead:
        for item, result in ahead:
            results.append((item, result))
            time.sleep(0.001)  # the child gets ahead
            before = ahead._early
            ahead.prefetch()
            ahead.prefetch()  # a second call takes nothing more: one result waits at most
            taken_early += before is None and ahead._early is not None
    assert [item for item, _ in results] == list(range(200))
    assert [value for _, (value, _) in results] == [n * n for n in range(200)]
    assert {pid for _, (_, pid) in results} - {PARENT}
    assert taken_early > 100, "prefetch took results off the pipe"
    assert ahead.fell_back is None and ahead.child_private_mb > 0


@needs_fork
def test_a_child_that_dies_while_results_are_taken_early_leaves_the_rest_to_the_caller() -> None:
    results = []
    with Ahead(list(range(8)), child_dies_at_three) as ahead:
        for item, result in ahead:
            results.append((item, result))
            time.sleep(0.05)  # the child reaches item 3 and dies: prefetch meets the closed pipe
            ahead.prefetch()
    assert [value for _, (value, _) in results] == [n * n for n in range(8)]
    assert {pid for item, (_, pid) in results if item >= 3} == {PARENT}
    assert ahead.fell_back is not None
    ahead.prefetch()  # after the child: nothing to take, and no error
