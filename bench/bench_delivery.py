"""Delivery over a relay that is not on this machine: a real cycle through a delay proxy.

A relay is rarely local; at a 10 ms round trip the SMTP conversation, not the CPU, decides how long
a cycle takes. This runs whole cycles (:func:`digest.cycle.run.run_once`, the bundled sample, one
20-paper digest per subscriber) against an aiosmtpd server that offers PIPELINING, behind a proxy
that holds every chunk ``--delay-ms`` in each direction (5 ms each way: a 10 ms round trip), for:
one connection without pipelining, with pipelining, and 4 and 8 connections with pipelining.

The server and the proxy run in their own processes (no shared GIL with the cycle). The server
counts every recipient, and the bench checks at most once on the received mail: as many
recipients as subscribers, none twice. Figures, never assertions:

    python -m bench.bench_delivery [--digests 10000] [--slow-digests 1000] [--delay-ms 5]

``--slow-digests`` sizes the one-connection cases (10,000 of them would take 7 minutes and more
without pipelining); their time for ``--digests`` is extrapolated linearly and marked so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

AS_OF = date(2026, 11, 20)  # a day of the bundled sample


# -- the relay: aiosmtpd offering PIPELINING, counting recipients ----------------------------------
def serve_sink() -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    received: Counter[str] = Counter()

    class Relay:
        async def handle_EHLO(
            self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
        ) -> list[str]:
            session.host_name = hostname
            return [responses[0], "250-PIPELINING", *responses[1:]]

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            received.update(address.lower() for address in envelope.rcpt_tos)
            return "250 OK"

    port = free_port()
    controller = Controller(Relay(), hostname="127.0.0.1", port=port, data_size_limit=10 * 1024 * 1024)
    controller.start()
    print(port, flush=True)
    for _ in sys.stdin:  # each line asks for the counts so far, and starts counting afresh
        total, twice = sum(received.values()), sum(1 for n in received.values() if n > 1)
        print(f"{total} {len(received)} {twice}", flush=True)
        received.clear()
    controller.stop()


# -- the delay proxy ---------------------------------------------------------------------------------
def serve_proxy(target: int, delay: float) -> None:
    """Every chunk read on one side is written to the other ``delay`` seconds later, in order."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def later() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    writer.close()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        task = asyncio.create_task(later())
        while True:
            chunk = await reader.read(65536)
            await queue.put((time.monotonic() + delay, chunk))
            if not chunk:
                break
        await task

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        for stream in (client_writer, server_writer):
            stream.transport.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
        await asyncio.gather(
            pump(client_reader, server_writer), pump(server_reader, client_writer), return_exceptions=True
        )

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes stdin

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    import resource

    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_delivery", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


# -- the cycles ------------------------------------------------------------------------------------
def run_case(proxy_port: int, subscribers: int, connections: int, pipelining: bool) -> tuple[float, int]:
    from digest.cycle.run import run_once
    from digest.models import Subscriber
    from digest.settings import load_settings
    from digest.sources.sample import SampleSource
    from digest.state.store import open_store

    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as data:
        os.environ.update(
            {
                "DIGEST_DATA_DIR": data,
                "DIGEST_SMTP__HOST": "127.0.0.1",
                "DIGEST_SMTP__PORT": str(proxy_port),
                "DIGEST_SMTP__SECURITY": "none",
                "DIGEST_SMTP__CONNECTIONS": str(connections),
                "DIGEST_SMTP__PIPELINING": "true" if pipelining else "false",
            }
        )
        settings = load_settings()
        with open_store(settings.data_dir) as store:
            store.save_subscribers(Subscriber(f"reader{n:05d}@example.org", ("diffusion",)) for n in range(subscribers))
        started = time.perf_counter()
        report = run_once(settings, AS_OF, sources=[SampleSource()])
        seconds = time.perf_counter() - started
        stages = ", ".join(f"{name} {value:.1f}" for name, value in report.stages.items())
        print(f"<!-- {connections} connection(s), pipelining {pipelining}: stages (s) {stages} -->", flush=True)
        return seconds, report.sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digests", type=int, default=10_000)
    parser.add_argument("--slow-digests", type=int, default=1_000, help="subscribers in the one-connection cases")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="added in each direction")
    parser.add_argument("--cases", default="1n,1p,4p,8p", help="connections and n (no pipelining) or p, e.g. 8p")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--proxy", nargs=2, type=float, metavar=("PORT", "DELAY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        serve_sink()
        return
    if args.proxy:
        serve_proxy(int(args.proxy[0]), args.proxy[1])
        return

    import logging

    logging.disable(logging.INFO)  # a line per email would be measured too
    sink, sink_port = start("--sink")
    proxy, proxy_port = start("--proxy", str(sink_port), str(args.delay_ms / 1000))
    assert sink.stdin is not None and sink.stdout is not None
    print(
        f"# delivery through a {2 * args.delay_ms:g} ms round trip ({platform.python_version()}, {os.cpu_count()} CPUs)"
    )
    print("| connections | pipelining | digests | seconds | ms per digest | for 10,000 | received, unique, twice |")
    print("|---|---|---|---|---|---|---|")
    cases = [
        (int(case[:-1]), case.endswith("p"), args.slow_digests if case[:-1] == "1" else args.digests)
        for case in args.cases.split(",")
    ]
    try:
        for connections, pipelining, count in cases:
            before = {name: cpu_seconds(pid) for name, pid in (("relay", sink.pid), ("proxy", proxy.pid))}
            mine = own_cpu_seconds()
            seconds, sent = run_case(proxy_port, count, connections, pipelining)
            used = {name: cpu_seconds(pid) - before[name] for name, pid in (("relay", sink.pid), ("proxy", proxy.pid))}
            used["digest (with its render process)"] = own_cpu_seconds() - mine
            cpu = ", ".join(f"{name} {value:.0f}" for name, value in used.items())
            print(f"<!-- CPU seconds: {cpu}; wall {seconds:.0f} s on {os.cpu_count()} CPUs -->", flush=True)
            sink.stdin.write("\n")
            sink.stdin.flush()
            total, unique, twice = sink.stdout.readline().split()
            scaled = seconds * 10_000 / count
            mark = "" if count == 10_000 else " (extrapolated)"
            print(
                f"| {connections} | {'yes' if pipelining else 'no'} | {count} | {seconds:.1f} | "
                f"{1000 * seconds / count:.1f} | {scaled:.0f} s{mark} | {total}, {unique}, {twice} |",
                flush=True,
            )
            assert sent == count == int(unique) == int(total) and twice == "0", "lost or doubled mail"
    finally:
        for process in (proxy, sink):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
