"""Do the work for the next items in a forked child process while the caller deals with the current one.

Why: handing an email to an SMTP server is mostly waiting for its replies, and rendering the next
digest is CPU work. Overlapping the two makes a cycle cost about what the hand-over costs instead of
the sum of both. A thread cannot do it: the sender would wait for the GIL after every SMTP reply
(``bench/RESULTS.md``), so the work runs in a child forked after planning, which already holds
the plan and the compiled templates: nothing is pickled on the way in, only the results on the
way out.

Results come back in order through a pipe, which bounds how far ahead the child gets (about a
megabyte of results). Whenever the child cannot be used — no ``fork`` on this platform, the child
dies, stalls for ``stall_seconds`` or its work raises — the remaining items are worked on in the
caller, so an error surfaces there with its real traceback and nothing is skipped.

The caller reads the pipe's descriptor itself, a frame at a time and never with a blocking read:
``Connection.recv`` after ``poll`` blocks for good when the child froze (SIGSTOP) halfway through
writing a result, since ``poll`` only tells that a first byte is there. Every wait has the stall
deadline and ends early on a stop request, and a child left behind is killed (SIGKILL: a stopped
process does not act on SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import multiprocessing
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)
PIPE_BYTES = 1 << 20  # room for about ten built digests between the child and the sender
HEADER = struct.Struct("!Q")  # each result on the pipe: its pickle's length, then the pickle
STOP_CHECK_SECONDS = 0.1  # how often a wait for the child looks at the stop event


class StopRequested(Exception):
    """The caller's stop event was set while it waited for the child."""


def can_fork() -> bool:
    """Only on Linux: macOS's system libraries are not safe to use after ``fork``."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def private_memory_mb() -> float:
    """Memory only this process holds (pages it copied or allocated since the fork)."""
    try:
        with open("/proc/self/smaps_rollup", encoding="ascii") as rollup:
            kib = sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean:", "Private_Dirty:")))
        return kib / 1024
    except (OSError, ValueError, IndexError):
        return 0.0


def _grow(connection: Connection) -> None:
    with contextlib.suppress(OSError, ImportError, AttributeError):  # Linux only; the default 64 KiB works too
        import fcntl

        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this child when the parent dies (say, ``kill -9`` mid-cycle): it holds a copy
    of the parent's file descriptors, the store lock's among them, and must not outlive it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def _no_wakeup_preemption() -> None:
    """Run this child under ``SCHED_BATCH``: the same share of CPU, but waking up does not preempt.

    Why: whenever the caller takes a result out of the full pipe, the kernel wakes this child,
    and a task that has just woken is allowed to preempt the one running on that core, which is
    the caller itself, which then waits for a whole render before it can hand the result to the
    SMTP server (figures in ``bench/RESULTS.md``, 2026-11-30). ``nice`` would starve the child; ``SCHED_BATCH``
    does not. Not on Linux: nothing to do.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _send_frame(fd: int, message: object) -> None:
    """Write one framed result to the pipe (the child's side), all of it."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class _Frames:
    """The caller's side of the pipe: framed results read as far as the bytes that are there go.

    A partly read result is kept between calls, so waiting never means a blocking read: a child
    that froze halfway through a result costs the deadline, not the rest of the process's life.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._header = bytearray()
        self._body: bytearray | None = None
        self._got = 0

    def _advance(self) -> Any:
        """One read of what the (readable) pipe holds; the message once it is whole, else None."""
        if self._body is None:
            chunk = os.read(self._fd, HEADER.size - len(self._header))
            if not chunk:
                raise EOFError("the render process closed the pipe")
            self._header += chunk
            if len(self._header) < HEADER.size:
                return None
            (length,) = HEADER.unpack(self._header)
            self._header.clear()
            self._body, self._got = bytearray(length), 0
            return None
        got = os.readv(self._fd, [memoryview(self._body)[self._got :]])
        if not got:
            raise EOFError("the render process closed the pipe in the middle of a result")
        self._got += got
        if self._got < len(self._body):
            return None
        body, self._body = self._body, None
        return pickle.loads(body)

    def take(self) -> Any:
        """The next message if all of it is in the pipe now, else None; never waits."""
        while self._poller.poll(0):
            message = self._advance()
            if message is not None:
                return message
        return None

    def read(self, seconds: float, stop: threading.Event | None) -> Any:
        """The next message, waiting at most ``seconds`` for the whole of it.

        Raises TimeoutError when it is not whole by then, StopRequested once ``stop`` is set and
        nothing is coming, EOFError when the child closed the pipe.
        """
        deadline = time.monotonic() + seconds
        while True:
            if self._poller.poll(0):
                message = self._advance()
                if message is not None:
                    return message
                continue
            if stop is not None and stop.is_set():
                raise StopRequested("a stop was requested")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no result for {seconds:g} s")
            if stop is not None:
                left = min(left, STOP_CHECK_SECONDS)
            self._poller.poll(math.ceil(left * 1000))


def _child(items: Sequence[Any], work: Callable[[Any], Any], sink: Connection, parent: int) -> None:
    # The parent's handlers (a SIGTERM that sets the cycle's stop event) mean nothing here.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _no_wakeup_preemption()
    fd = sink.fileno()
    try:
        for item in items:
            try:
                result = work(item)
            except BaseException:  # the caller does this item again and sees the error itself
                _send_frame(fd, ("failed", None))
                return
            _send_frame(fd, ("ok", result))
        _send_frame(fd, ("done", private_memory_mb()))
    except (BrokenPipeError, OSError):  # the caller has left
        return
    finally:
        sink.close()
        # Leave at once: no atexit handlers, no flushing of stdout buffers copied from the parent
        # (a progress bar's half-written frame would be printed twice), no finalizers of its objects.
        os._exit(0)


class Ahead(Generic[T, R]):
    """``with Ahead(items, work) as ahead: for item, result in ahead: ...``

    Leaving the ``with`` block early stops the child. ``child_private_mb`` is the memory the child
    held of its own when it finished (0 when there was no child): a process's peak memory report
    should add it. Once ``stop`` is set, a wait for the child ends within a tenth of a second and
    the items left are worked on in the caller (which is expected to check ``stop`` itself).
    """

    def __init__(
        self,
        items: Sequence[T],
        work: Callable[[T], R],
        *,
        use_child: bool = True,
        stall_seconds: float = 60.0,
        stop: threading.Event | None = None,
    ) -> None:
        self._items = items
        self._work = work
        self._use_child = use_child and can_fork() and len(items) > 1
        self._stall_seconds = stall_seconds
        self._stop_event = stop
        self._process: Any = None
        self._source: Connection | None = None
        self._frames: _Frames | None = None
        self._received = 0  # results taken out of the pipe, by the iterator or by prefetch
        self._early: tuple[str, Any] | BaseException | None = None  # what prefetch took, or met
        self.child_private_mb = 0.0
        self.fell_back: str | None = None

    def __enter__(self) -> Ahead[T, R]:
        if self._use_child:
            self._start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        source, sink = context.Pipe(duplex=False)
        _grow(sink)
        # Frozen objects are skipped by the collector, so the child does not touch (and copy) every
        # page of the parent's heap the first time it collects.
        gc.freeze()
        for stream in (sys.stdout, sys.stderr):  # or the child's exit would write their buffers again
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns about forking with threads; see below
                warnings.simplefilter("ignore", DeprecationWarning)
                process = context.Process(target=_child, args=(self._items, self._work, sink, os.getpid()), daemon=True)
                process.start()
        except OSError as exc:
            source.close()
            self.fell_back = f"cannot start a render process: {exc}"
            log.warning("%s; rendering in this process", self.fell_back)
            return
        finally:
            gc.unfreeze()
            sink.close()
        # A lock another thread held at the fork stays held in the child: the stall timeout below
        # is what turns that rare deadlock into a fallback instead of a hang.
        self._process, self._source, self._frames = process, source, _Frames(source.fileno())

    def _stop(self) -> None:
        process, source, self._process, self._source, self._frames = self._process, self._source, None, None, None
        if source is not None:
            source.close()
        if process is not None:
            if process.is_alive():
                process.kill()  # SIGKILL: a frozen (SIGSTOPped) child would keep a SIGTERM pending
            process.join(timeout=5)

    def _read_memory_report(self) -> None:
        """The child's last word, after every result: its memory. Missing it loses nothing else."""
        assert self._frames is not None
        with contextlib.suppress(EOFError, OSError, ValueError, TypeError, TimeoutError, StopRequested):
            kind, payload = self._frames.read(self._stall_seconds, self._stop_event)
            if kind == "done":
                self.child_private_mb = float(payload)

    def prefetch(self) -> None:
        """Take the next result out of the pipe now if the child has sent it, without waiting.

        For a caller that is about to wait on something else anyway (an SMTP server reading the
        email just handed over, for milliseconds): copying the next result off the pipe and
        unpickling it then keeps that work off the way from one send to the next. Never raises: an
        error is kept and raised by the iterator, which then falls back to working in the caller.
        """
        frames = self._frames
        if frames is None or self._early is not None or self._received >= len(self._items):
            return
        try:
            message = frames.take()
            if message is not None:
                self._early = message
                self._received += 1
        except (EOFError, OSError) as exc:
            self._early = exc
        except (ValueError, pickle.UnpicklingError) as exc:  # a closed descriptor, a damaged result
            self._early = OSError(f"the pipe was closed: {exc}")

    def _next_result(self) -> tuple[str, Any]:
        """The next result: the one prefetch took, else the pipe's, waiting at most the stall time."""
        early, self._early = self._early, None
        if isinstance(early, BaseException):
            raise early
        if early is not None:
            return early
        assert self._frames is not None
        result: tuple[str, Any] = self._frames.read(self._stall_seconds, self._stop_event)
        self._received += 1
        return result

    def __iter__(self) -> Iterator[tuple[T, R]]:
        position = 0
        if self._source is not None:
            try:
                while position < len(self._items):
                    kind, payload = self._next_result()
                    if kind != "ok":
                        raise RuntimeError("its work raised an error")
                    yield self._items[position], payload
                    position += 1
                self._read_memory_report()
            except (EOFError, OSError, TimeoutError, RuntimeError, StopRequested, pickle.UnpicklingError) as exc:
                self.fell_back = f"render process stopped after {position} item(s): {exc}"
                log.warning("%s; rendering the rest in this process", self.fell_back)
            finally:
                self._stop()
        for item in self._items[position:]:
            yield item, self._work(item)


def timed(work: Callable[[T], R]) -> Callable[[T], tuple[R, float]]:
    """``work`` that also returns how long it took: the child's time reaches the caller with the result."""

    def run(item: T) -> tuple[R, float]:
        started = time.perf_counter()
        result = work(item)
        return result, time.perf_counter() - started

    return run
