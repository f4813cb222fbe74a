"""``python -m bench.bench_web``: a real ``digest serve`` under 20 concurrent web clients.

The store is the main bench's 10,000 subscribers with a year of history (50,000 seen papers and
30 days × 20 deliveries per person in the ledger, :func:`bench.__main__.build_history`), built once
and copied for each phase. Each client loops over ``GET /manage?token=``, ``POST /unsubscribe``
(RFC 8058 one-click, a different person each time) and ``GET /healthz``. Printed per endpoint:
p50 and p99 latency and the requests that were not answered 200; and the service's RSS
(``/proc/PID/status`` VmRSS, sampled every 50 ms).

Two phases: the service idle, and the service while its scheduled cycle sends (2,000 new papers
from a local Daily Papers API; an SMTP server in another process that holds each message for
``--smtp-delay`` seconds, so the send loop lasts through the measurement, which starts once
``--sent-before`` emails got through). It asserts nothing.

    python -m bench.bench_web [--subscribers 10000] [--seconds 15] [--clients 20] [--store DIR]

``--store DIR`` keeps the built store there and reuses it (to measure another checkout of the code
on the same store: run this file with that checkout first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

ENDPOINTS = ("manage", "one-click", "healthz")


def smtp_sink(delay: float) -> None:
    """The delaying SMTP server (``--sink``): prints its port, then a count per line read from stdin."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Slow:
        count = 0

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            await asyncio.sleep(delay)
            self.count += 1
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Slow()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    for _ in sys.stdin:
        print(handler.count, flush=True)
    controller.stop()


class Sink:
    def __init__(self, delay: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_web", "--sink", str(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def count(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def build_store(store_dir: Path, size: int) -> None:
    from bench.__main__ import build_history
    from bench.workload import subscribers, vocabulary
    from digest.models import CycleReport
    from digest.state.store import open_store

    vocab = vocabulary()
    lines = subscribers(size, vocab)
    people = [json.loads(line) for line in lines]
    store_dir.mkdir(parents=True)
    jsonl = store_dir.with_name("subscribers.jsonl")
    jsonl.write_text("\n".join(lines) + "\n")
    env = {**clean_env(), "DIGEST_DATA_DIR": str(store_dir)}
    subprocess.run([sys.executable, "-m", "digest", "import", str(jsonl)], env=env, check=True, capture_output=True)
    build_history(store_dir, vocab, people, 50_000, 364)
    with open_store(store_dir) as store:  # as a cycle yesterday left it: nothing to catch up at start
        yesterday = datetime.now(UTC) - timedelta(days=1)
        store.record_cycle(CycleReport(as_of=yesterday.date(), started_at=yesterday, finished_at=yesterday))
    (store_dir / "secret_key").write_text("bench-secret-key-" + "x" * 40 + "\n")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """``digest serve`` as a subprocess, and its RSS sampled in a thread."""

    def __init__(self, data_dir: Path, cron: str, extra: dict[str, str]) -> None:
        self.port = free_port()
        env = {
            **clean_env(),
            "DIGEST_DATA_DIR": str(data_dir),
            "DIGEST_WEB__PORT": str(self.port),
            "DIGEST_SCHEDULE__CRON": cron,
            "DIGEST_SCHEDULE__TIMEZONE": "UTC",
            "DIGEST_PUBLIC_URL": "https://digest.bench.example",
            "DIGEST_SMTP__HOST": "127.0.0.1",
            "DIGEST_SMTP__SECURITY": "none",
            "DIGEST_SMTP__FROM_ADDRESS": "digest@bench.example",
            **extra,
        }
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the object)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.rss: list[float] = []
        self._done = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=30)
                break
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("digest serve did not start:\n" + self.output()) from None
                time.sleep(0.2)

    def _sample(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while not self._done.wait(0.05):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss.append(int(line.split()[1]) / 1024)
            except OSError:
                return

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        self._done.set()
        terminate(self.process, 120)


def terminate(process: subprocess.Popen[bytes], seconds: float) -> None:
    """SIGTERM, as a service manager stops it; killed if it has not exited within ``seconds``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: an HTTP client library in this process
    costs about as much CPU per request as the server does, on the same two cores, and its share
    of the CPU would be counted as the service's latency. This one parses a status line, headers
    and a Content-Length body, which is all ``digest serve`` sends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, body: bytes = b"", content_type: str = "", forwarded_for: str = ""
    ) -> int:
        """One request; ``forwarded_for``: the client a trusted reverse proxy names (``X-Forwarded-For``)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if forwarded_for:
            head += f"X-Forwarded-For: {forwarded_for}\r\n"
        if body:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            length = 0
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer.close()
            self.writer = None
            raise
        return int(status_line.split()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, secret: str, clients: int, seconds: float, size: int) -> dict[str, list[float | None]]:
    """``clients`` loops for ``seconds``; per endpoint the latencies (None: not answered 200)."""
    from urllib.parse import urlencode

    from digest.signing import Signer

    signer = Signer(secret)
    results: dict[str, list[float | None]] = {name: [] for name in ENDPOINTS}
    # /manage looks up the first thousand people; each one-click unsubscribes someone new, from the
    # end of the list down to them (a fast service gets through thousands in a phase).
    readers = min(1000, size // 2)
    leaving = iter(range(size - 1, readers - 1, -1))
    end = time.monotonic() + seconds

    async def client(n: int) -> None:
        connection = Connection(port)
        turn = n
        while time.monotonic() < end:
            name = ENDPOINTS[turn % len(ENDPOINTS)]
            turn += 1
            person = f"reader{(turn * 7919 + n) % readers:05d}@bench.example"
            # Tokens are signed before the clock starts: the client's work is not the server's latency.
            if name == "manage":
                args: tuple[str, str, bytes, str] = (
                    "GET",
                    "/manage?" + urlencode({"token": signer.sign("manage", person)}),
                    b"",
                    "",
                )
            elif name == "healthz":
                args = ("GET", "/healthz", b"", "")
            else:
                leaver = f"reader{next(leaving, readers):05d}@bench.example"  # past the end: a repeat
                target = "/unsubscribe?" + urlencode({"token": signer.sign("unsubscribe", leaver)})
                args = ("POST", target, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded")
            started = time.perf_counter()
            try:
                ok = await asyncio.wait_for(connection.request(*args), 60) == 200
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                ok = False
            results[name].append(time.perf_counter() - started if ok else None)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return results


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else float("nan")


def report(
    label: str, results: dict[str, list[float | None]], rss: list[float], extra: str = "", cpu: float = 0.0
) -> None:
    print(f"\n{label}{extra}")
    requests = sum(len(values) for values in results.values())
    if cpu and requests:
        print(f"  service CPU: {cpu:.1f} s for {requests} requests = {cpu / requests * 1000:.2f} ms a request")
    print(f"  {'endpoint':<10} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in results.items():
        ok = [v * 1000 for v in values if v is not None]
        errors = len(values) - len(ok)
        if ok:
            p50, p99, top = percentile(ok, 50), percentile(ok, 99), max(ok)
            print(f"  {name:<10} {len(values):>8} {errors:>6} {p50:>8.1f} {p99:>8.1f} {top:>8.1f}")
        else:
            print(f"  {name:<10} {len(values):>8} {errors:>6} {'-':>8} {'-':>8} {'-':>8}")
    if rss:
        print(f"  service RSS: max {max(rss):.0f} MB, last {rss[-1]:.0f} MB ({len(rss)} samples)")


def phase_idle(store: Path, work: Path, args: argparse.Namespace, secret: str) -> None:
    data_dir = work / "idle"
    shutil.copytree(store, data_dir)
    nowhere = {"DIGEST_SOURCES__HF_PAPERS__BASE_URL": f"http://127.0.0.1:{free_port()}"}  # never the network
    service = Service(data_dir, "0 0 1 1 *", nowhere)
    try:
        started, cpu = len(service.rss), cpu_seconds(service.process.pid)
        results = asyncio.run(load(service.port, secret, args.clients, args.seconds, args.subscribers))
        cpu = cpu_seconds(service.process.pid) - cpu
        at_start = f" (RSS at start {max(service.rss[:started] or [0]):.0f} MB)"
        report("serve idle", results, service.rss[started:], at_start, cpu)
    finally:
        service.stop()


def phase_cycle(store: Path, work: Path, args: argparse.Namespace, secret: str) -> None:
    from bench.workload import items_for_day, vocabulary
    from tests.servers import FakeHfApi

    data_dir = work / "cycle"
    shutil.copytree(store, data_dir)
    today = date.today()
    entries = items_for_day(today, args.items, seed=1, vocab=vocabulary())
    api = FakeHfApi(days={today.isoformat(): entries}).start()
    for back in range(1, 8):
        api.days.setdefault((today - timedelta(days=back)).isoformat(), [])
    sink = Sink(args.smtp_delay)
    extra = {
        "DIGEST_SOURCES__HF_PAPERS__BASE_URL": api.base_url,
        "DIGEST_SOURCES__HF_PAPERS__PAGE_SIZE": "100",
        "DIGEST_SMTP__PORT": str(sink.port),
    }
    service = Service(data_dir, "*/5 * * * * *", extra)  # fires within five seconds
    try:
        deadline = time.monotonic() + 600
        while sink.count() < args.sent_before:
            if time.monotonic() > deadline or service.process.poll() is not None:
                raise SystemExit("the cycle did not start sending:\n" + service.output())
            time.sleep(0.5)
        before, started = sink.count(), len(service.rss)
        results = asyncio.run(load(service.port, secret, args.clients, args.seconds, args.subscribers))
        after = sink.count()
        report(
            "serve while its cycle sends",
            results,
            service.rss[started:],
            f" ({after - before} emails sent during it; RSS max over the whole run {max(service.rss):.0f} MB)",
        )
    finally:
        service.stop()
        sink.close()
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--smtp-delay", type=float, default=0.02)
    parser.add_argument("--sent-before", type=int, default=100)
    parser.add_argument("--store", type=Path, help="keep the built store here and reuse it")
    parser.add_argument("--phases", default="idle,cycle")
    parser.add_argument("--sink", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        smtp_sink(args.sink)
        return
    with tempfile.TemporaryDirectory(prefix="digest-bench-web-") as temp:
        work = Path(temp)
        store = args.store or work / "store" / "data"
        if not (store / "digest.json").exists():
            started = time.perf_counter()
            build_store(store, args.subscribers)
            print(f"built the store in {time.perf_counter() - started:.0f} s", flush=True)
        size = (store / "digest.json").stat().st_size / 1e6
        print(
            f"store: {args.subscribers} subscribers, {size:.1f} MB; {args.clients} clients, {args.seconds:.0f} s each"
        )
        secret = (store / "secret_key").read_text().strip()
        if "idle" in args.phases:
            phase_idle(store, work, args, secret)
        if "cycle" in args.phases:
            phase_cycle(store, work, args, secret)


if __name__ == "__main__":
    main()
