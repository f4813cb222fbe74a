"""``python -m bench postgres``: a PostgreSQL deployment's cycle, roles as processes (issue 30).

A real PostgreSQL (started as the tests start it, :mod:`tests.postgres_server`: ``initdb`` and
``pg_ctl`` into a temp dir, ``fsync`` off), ``--subscribers`` people with 5 rules each from the
main bench's 500-phrase vocabulary, 2,000 new papers from a local Daily Papers API, and the roles
as real processes: one ``digest scheduler`` (its cron fires once, a few seconds after everything is
up), ``--workers`` ``digest worker`` processes, one ``digest web``, all sending to one aiosmtpd
sink in its own process (:mod:`bench.smtp_sink`, no PIPELINING, as the main bench's).

Measured, figures and never assertions:

- **cycle**: from the scheduler's fire time to the last email the sink accepted (fetch, match,
  queue, then the workers render and send), next to the **floor**: the same number of messages
  of the cycle's own kind (planned from the same database and built by digest's own code, for 200
  subscribers spread over the list) pushed to the same sink over ``--workers`` connections (one
  process each, with the cycle's SMTP client), timed before and after the cycle; the ratio is over
  their mean, as in the main bench (:func:`bench.__main__.smtp_floor`).
- **peak RSS** (``VmHWM``) of every process: the scheduler, each worker, the web.
- **the web under load during the cycle**: ``--clients`` clients looping over ``GET /``, ``GET
  /manage?token=`` and RFC 8058 one-click ``POST /unsubscribe`` for ``--web-seconds`` once the
  workers are sending (the hand-written HTTP client of :mod:`bench.bench_web`); p50/p99 per endpoint.
- CPU seconds of each process, of the sink and of the PostgreSQL server over the cycle.
- ``--worker-calls``: the workers' CPU split by call (:mod:`bench.worker_calls`), the kernel's
  share of their socket and file calls included, which ``--py-spy`` leaves out.

    python -m bench postgres [--subscribers 100000] [--workers 4] [--clients 20] [--web-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import worker_calls
from bench.__main__ import SmtpServer, machine, smtp_floor
from bench.bench_web import Connection, free_port, percentile, terminate
from bench.workload import items_for_day, subscribers, vocabulary

ENDPOINTS = ("home", "manage", "one-click")
SECRET = "bench-secret-key-" + "x" * 40
CLK = os.sysconf("SC_CLK_TCK")


# -- processes: CPU and memory from /proc ---------------------------------------------------------
def proc_stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    try:
        fields = proc_stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def status_mb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def postgres_cpu(postmaster: int) -> float:
    """The server's CPU so far: the postmaster, its live children and those that exited."""
    total = 0.0
    try:
        fields = proc_stat(postmaster)
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK
    except OSError:
        return 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = proc_stat(int(entry.name))
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


# -- the database ---------------------------------------------------------------------------------
# With --pg-stats: statements' times (pg_stat_statements) and every autovacuum in the server's log.
STATS_SETTINGS = (
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track_planning=on",
    "log_autovacuum_min_duration=0",
)
AUTOVACUUM_CPU = re.compile(
    r'automatic (?:aggressive )?(vacuum|analyze) (?:to prevent wraparound )?of table "([^"]+)"'
    r".*?CPU: user: ([0-9.]+) s, system: ([0-9.]+) s",
    re.DOTALL,
)


def start_postgres(stats: bool = False) -> Any:
    from tests.postgres_server import PostgresServer, postgres_bin

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql package")
    return PostgresServer(bin_dir, STATS_SETTINGS if stats else ()).start()


def count_statements(url: str) -> None:
    """Start counting the statements run in ``url``'s database, for :func:`pg_stats`."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION pg_stat_statements")


def pg_stats(url: str, log: Path) -> str:
    """What the server did over the run: its costliest statements, each table's rows written and
    autovacuums, and the CPU the autovacuums took (from its log)."""
    import psycopg

    lines = ["statements by time: calls, exec ms, ms a call, WAL KB a call, query"]
    with psycopg.connect(url, autocommit=True) as connection:
        for calls, total, wal, query in connection.execute(
            "SELECT calls, total_exec_time, wal_bytes, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
            "ORDER BY total_exec_time DESC LIMIT 8"
        ):
            lines.append(f"  {calls:>7} {total:9.0f} {total / calls:7.3f} {wal / calls / 1024:7.1f}  {query[:90]}")
        lines.append("tables: rows inserted, deleted; autovacuums, autoanalyzes")
        for name, inserted, deleted, vacuums, analyzes in connection.execute(
            "SELECT relname, n_tup_ins, n_tup_del, autovacuum_count, autoanalyze_count FROM pg_stat_user_tables "
            "WHERE n_tup_ins + n_tup_del > 0 ORDER BY relname"
        ):
            lines.append(f"  {name:<12} {inserted:>9} {deleted:>9} {vacuums:>3} {analyzes:>3}")
    found = AUTOVACUUM_CPU.findall(log.read_text(errors="replace"))
    cpu = sum(float(user) + float(system) for _, _, user, system in found)
    lines.append(f"autovacuum and autoanalyze: {len(found)} runs, {cpu:.2f} s of CPU")
    return "\n".join(lines)


def fill(url: str, size: int, vocab: list[str]) -> None:
    """``size`` subscribers, and a cycle recorded an hour ago (nothing to catch up at start)."""
    from digest.models import CycleReport, Subscriber
    from digest.state.postgres.store import PostgresStore

    store = PostgresStore(url)
    try:
        people = (json.loads(line) for line in subscribers(size, vocab))
        store.save_subscribers(Subscriber(p["email"], tuple(p["rules"])) for p in people)
        earlier = datetime.now(UTC) - timedelta(hours=1)
        store.record_cycle(
            CycleReport(as_of=earlier.date() - timedelta(days=1), started_at=earlier, finished_at=earlier)
        )
        # The tables as a running deployment has them: analysed by autovacuum, the queue analysed
        # empty after the last cycle (which had left each worker with a claim that read the whole
        # queue: bench/postgres.md, "2026-12-07, noon"), and the bulk load checkpointed.
        store.connection.execute("VACUUM ANALYZE")
        store.connection.execute("CHECKPOINT")
    finally:
        store.close()


def floor_messages(url: str, entries: list[dict[str, Any]], today: date, count: int = 200) -> list[bytes]:
    """The messages of ``count`` subscribers spread over the list, as the cycle will build them
    (:func:`bench.__main__.sample_messages`, on a snapshot of the database: rolled back)."""
    from digest.cycle.compose import digest_message
    from digest.cycle.days import window_days
    from digest.cycle.links import digest_links
    from digest.cycle.plan import candidate_start, plan_digests
    from digest.mail.render import render_digest
    from digest.settings import Settings
    from digest.signing import Signer
    from digest.sources.hf_papers import parse
    from digest.state.postgres.store import PostgresStore

    items, _ = parse(entries, "https://huggingface.co", today)
    store = PostgresStore(url, writable=False)
    try:
        store.upsert_items(items, datetime.now(UTC))
        people = store.subscribers(active_only=True)
        readers = people[:: max(1, len(people) // count)][:count]
        window_start = window_days(today, Settings().lookback_days)[0]
        floor = store.candidate_floor()
        candidates = store.items_listed_between(candidate_start(readers, window_start, floor), today)
        plan = plan_digests(readers, candidates, store.delivered_ids, window_start, floor, today)
    finally:
        store.close_connection()
    signer = Signer(SECRET)
    now = datetime.now(UTC)
    messages = []
    for digest in plan.digests:
        links = digest_links(signer, "https://digest.bench.example", digest)
        messages.append(digest_message(digest, render_digest(digest, links), links, "digest@bench.example", now).raw)
    return messages


def _floor_share(port: int, messages: list[bytes], count: int) -> None:
    smtp_floor(port, messages, count)


def timed_floor(sink: SmtpServer, messages: list[bytes], count: int, connections: int, name: str) -> float:
    """:func:`floor`, printed with the sink's CPU per email: the sink's code does not change, so
    that figure is the machine's speed at the time (it moved by half between runs of one day)."""
    cpu = sink.cpu_seconds()
    seconds = floor(sink.port, messages, count, connections)
    per_email = (sink.cpu_seconds() - cpu) / count * 1000
    print(f"{name}: {seconds:.1f} s for {count} emails (the sink's CPU {per_email:.2f} ms an email)", flush=True)
    return seconds


def floor(port: int, messages: list[bytes], count: int, connections: int) -> float:
    """``count`` messages over ``connections`` connections, one process each (forked)."""
    context = multiprocessing.get_context("fork")
    shares = [count // connections + (1 if n < count % connections else 0) for n in range(connections)]
    started = time.perf_counter()
    processes = [context.Process(target=_floor_share, args=(port, messages, share)) for share in shares]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return time.perf_counter() - started


# -- the roles ------------------------------------------------------------------------------------
class Role:
    """``digest ROLE`` as a process, its output in a file."""

    def __init__(self, name: str, role: str, env: dict[str, str], logs: Path, calls: Path | None = None) -> None:
        """``calls``: a worker started through :mod:`bench.worker_calls`, its table to that file."""
        self.name = name
        self.log = logs / f"{name}.log"
        command = ["-m", "bench.worker_calls", str(calls), role] if calls else ["-m", "digest", role]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, *command], env=env, stdout=out, stderr=out)
        self.peak_mb = 0.0
        self.cpu = 0.0

    def sample(self) -> None:
        """Remember the peak RSS and CPU while the process lives (read just before it is stopped)."""
        if self.process.poll() is None:
            self.peak_mb = max(self.peak_mb, status_mb(self.process.pid, "VmHWM"))
            self.cpu = max(self.cpu, cpu_seconds(self.process.pid))

    def stop(self) -> None:
        self.sample()
        terminate(self.process, 60)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def spy(role: Role, work: Path) -> tuple[subprocess.Popen[bytes], Role, Path]:
    """``py-spy record`` of a role's process until it is sent SIGINT: raw stacks, 100 a second, only
    those that hold the GIL (``--gil``): CPU spent in C code that released it (hashing,
    compression, socket I/O) is left out, and with it time that is not the role's Python."""
    out = work / f"{role.name}.stacks"
    binary = Path(sys.executable).with_name("py-spy")
    command = [
        str(binary) if binary.exists() else "py-spy",
        "record",
        "--format",
        "raw",
        "--rate",
        "100",
        "--nonblocking",
        "--gil",
        "-o",
        str(out),
    ]
    process = subprocess.Popen(
        [*command, "-p", str(role.process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return process, role, out


def top_of(stacks: Path, shown: int = 25) -> str:
    """Inclusive sample counts per function (each counted once per stack), the top ``shown``."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in stacks.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        for frame in {f.split(" (")[0] + " " + f.split("/")[-1].split(":")[0] for f in frames.split(";")}:
            inclusive[frame] = inclusive.get(frame, 0) + samples
    best = sorted(inclusive.items(), key=lambda kv: -kv[1])[:shown]
    return f"{total} samples)\n" + "\n".join(f"  {100 * n / max(1, total):5.1f}%  {name}" for name, n in best)


def role_env(url: str, data_dir: Path, api_url: str, smtp_port: int, web_port: int, cron: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
        "DIGEST_STORE__URL": url,
        "DIGEST_DATA_DIR": str(data_dir),
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_PUBLIC_URL": "https://digest.bench.example",
        "DIGEST_SOURCES__HF_PAPERS__BASE_URL": api_url,
        "DIGEST_SOURCES__HF_PAPERS__PAGE_SIZE": "100",
        "DIGEST_SMTP__HOST": "127.0.0.1",
        "DIGEST_SMTP__PORT": str(smtp_port),
        "DIGEST_SMTP__SECURITY": "none",
        "DIGEST_SMTP__FROM_ADDRESS": "digest@bench.example",
        "DIGEST_SCHEDULE__CRON": cron,
        "DIGEST_SCHEDULE__TIMEZONE": "UTC",
        "DIGEST_WEB__HOST": "127.0.0.1",
        "DIGEST_WEB__PORT": str(web_port),
        # the clients come through a "reverse proxy" (the bench's own address) that names each
        # visitor: a crowd of people, each under the per-client limits (/manage: 120 a minute)
        "DIGEST_WEB__TRUSTED_PROXIES": "127.0.0.1",
    }


# -- the web's clients ----------------------------------------------------------------------------
async def load(
    ports: list[int], clients: int, seconds: float, size: int, idle: bool = False
) -> dict[str, list[float | None]]:
    """``clients`` loops over the three endpoints for ``seconds``, client n on the web replica at
    ``ports[n % len(ports)]`` (a load balancer's round robin); latencies per endpoint (None:
    not answered 200). Each one-click unsubscribes someone new, from the end of the list down: the
    last 5 % during the cycle, the 5 % before them while idle (then repeats of the last one).
    Every request names a visitor of its own through the trusted "proxy": many people, each under
    the web's per-client limits, not 20 clients at 429."""
    from urllib.parse import urlencode

    from digest.signing import Signer

    signer = Signer(SECRET)
    results: dict[str, list[float | None]] = {name: [] for name in ENDPOINTS}
    readers = min(1000, size // 2)
    top = size - size // 20 if idle else size
    last = max(readers, top - size // 20)  # at most 5 % of the list leaves; then repeats of the last
    leaving = iter(range(top - 1, last - 1, -1))
    end = time.monotonic() + seconds

    visits = iter(range(1, 1 << 24))

    async def client(n: int) -> None:
        connection = Connection(ports[n % len(ports)])
        turn = n
        while time.monotonic() < end:
            name = ENDPOINTS[turn % len(ENDPOINTS)]
            turn += 1
            if name == "home":
                args: tuple[str, str, bytes, str] = ("GET", "/", b"", "")
            elif name == "manage":
                person = f"reader{(turn * 7919 + n) % readers:05d}@bench.example"
                args = ("GET", "/manage?" + urlencode({"token": signer.sign("manage", person)}), b"", "")
            else:
                leaver = f"reader{next(leaving, last):05d}@bench.example"
                target = "/unsubscribe?" + urlencode({"token": signer.sign("unsubscribe", leaver)})
                args = ("POST", target, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded")
            visitor = ipaddress.IPv4Address(0x0A000000 + next(visits))  # 10.x.y.z: a new visitor each time
            started = time.perf_counter()
            try:
                ok = await asyncio.wait_for(connection.request(*args, forwarded_for=str(visitor)), 60) == 200
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                ok = False
            results[name].append(time.perf_counter() - started if ok else None)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return results


def wait_for_web(port: int, role: Role) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if role.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("digest web did not start:\n" + role.tail())
        time.sleep(0.2)


# -- one run --------------------------------------------------------------------------------------
@dataclass
class Run:
    subscribers: int
    workers: int
    fill_seconds: float = 0.0
    floors: list[float] = field(default_factory=list)
    floor_emails: int = 0
    message_kb: tuple[float, float] = (0.0, 0.0)
    cycle: float = 0.0
    sent: int = 0
    queued_at: float = 0.0  # seconds from the fire time to the first email accepted
    stages: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    web: dict[str, list[float | None]] = field(default_factory=dict)
    web_window: tuple[float, float] = (0.0, 0.0)  # seconds after the fire time
    idle_web: dict[str, list[float | None]] = field(default_factory=dict)  # before the cycle


def run(args: argparse.Namespace) -> Run:
    from tests.servers import FakeHfApi

    result = Run(args.subscribers, args.workers)
    vocab = vocabulary()
    today = datetime.now(UTC).date()
    entries = items_for_day(today, args.items, seed=1, vocab=vocab)
    api = FakeHfApi(days={today.isoformat(): entries}).start()
    for back in range(1, 8):
        api.days.setdefault((today - timedelta(days=back)).isoformat(), [])
    server = start_postgres(args.pg_stats)
    sink = SmtpServer()
    roles: list[Role] = []
    try:
        with tempfile.TemporaryDirectory(prefix="digest-bench-pg-", dir=args.workdir) as temp:
            work = Path(temp)
            url = server.new_database()
            if args.pg_stats:
                count_statements(url)
            started = time.perf_counter()
            fill(url, args.subscribers, vocab)
            result.fill_seconds = time.perf_counter() - started
            print(f"filled {args.subscribers} subscribers in {result.fill_seconds:.1f} s", flush=True)
            messages = floor_messages(url, entries, today)
            result.floor_emails = args.floor_emails or args.subscribers
            if args.workers:
                result.floors.append(timed_floor(sink, messages, result.floor_emails, args.workers, "floor before"))
            floor_counts = sink.take()

            web_ports = [free_port() for _ in range(args.web_replicas)]
            fire = (datetime.now(UTC) + timedelta(seconds=args.fire_after + args.idle_web_seconds)).replace(
                microsecond=0
            )
            cron = f"{fire.second} {fire.minute} {fire.hour} * * *"
            env = role_env(url, work / "data", api.base_url, sink.port, web_ports[0], cron)
            for n, port in enumerate(web_ports):
                name = "web" if len(web_ports) == 1 else f"web{n + 1}"
                roles.append(Role(name, "web", {**env, "DIGEST_WEB__PORT": str(port)}, work))
            webs = list(roles)
            calls = [work / f"worker{n + 1}.calls.json" for n in range(args.workers)] if args.worker_calls else []
            roles += [
                Role(f"worker{n + 1}", "worker", env, work, calls[n] if calls else None) for n in range(args.workers)
            ]
            roles.append(Role("scheduler", "scheduler", env, work))
            for port, role in zip(web_ports, webs, strict=True):
                wait_for_web(port, role)
            spies = [spy(role, work) for role in roles if role.name in args.py_spy.split(",")] if args.py_spy else []
            if args.idle_web_seconds > 0 and args.workers:  # the same load before the cycle, for comparison
                result.idle_web = asyncio.run(
                    load(web_ports, args.clients, args.idle_web_seconds, args.subscribers, True)
                )
            postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
            before = {r.name: cpu_seconds(r.process.pid) for r in roles}
            pg_before, sink_before = postgres_cpu(postmaster), sink.cpu_seconds()
            while datetime.now(UTC) < fire:
                time.sleep(0.05)
            fired = time.perf_counter()
            result.sent, result.cycle, result.queued_at, cycle_counts = watch(
                args, url, sink, roles, fired, web_ports, result
            )
            for role in roles:
                role.sample()
            result.cpu = {r.name: r.cpu - before[r.name] for r in roles}
            if args.pg_stats:  # the fill's statements included; its VACUUM ANALYZE is not an autovacuum
                print(f"--- PostgreSQL over the run\n{pg_stats(url, server.log)}", flush=True)
            result.cpu["postgres"] = postgres_cpu(postmaster) - pg_before
            result.cpu["sink"] = sink.cpu_seconds() - sink_before
            result.peaks = {r.name: r.peak_mb for r in roles}
            result.message_kb = (
                floor_counts[1] / max(1, floor_counts[0]) / 1024,
                cycle_counts[1] / max(1, cycle_counts[0]) / 1024,
            )
            for process, role, out in spies:
                process.send_signal(signal.SIGINT)
                process.wait(60)
                print(f"--- py-spy of {role.name}: the functions most often on the stack (of {top_of(out)})")
            for role in roles:
                role.stop()
            if calls:
                print(f"--- the workers' CPU by call (bench.worker_calls): {worker_calls.report(calls)}", flush=True)
            result.stages = last_stages(url)
            if args.workers:
                result.floors.append(timed_floor(sink, messages, result.floor_emails, args.workers, "floor after"))
                sink.take()
            if args.keep_logs:
                for role in roles:
                    print(f"--- {role.name}\n{role.tail()}")
    finally:
        for role in roles:
            role.stop()
        sink.close()
        server.stop()
        api.stop()
    return result


def watch(
    args: argparse.Namespace,
    url: str,
    sink: SmtpServer,
    roles: list[Role],
    fired: float,
    web_ports: list[int],
    result: Run,
) -> tuple[int, float, float, tuple[int, int]]:
    """Until the cycle is recorded, the queue empty and the sink got everything: the emails sent,
    the cycle's time (fire to the last email accepted), the time to the first, and the sink's counts."""
    from digest.state.postgres import queue as sql
    from digest.state.postgres.store import PostgresStore

    store = PostgresStore(url)
    count = size = shown = 0
    last = first = 0.0
    web_thread: threading.Thread | None = None
    deadline = fired + args.timeout
    try:
        while True:
            time.sleep(0.25)
            now = time.perf_counter()
            got, got_bytes = sink.take()
            if got:
                count += got
                size += got_bytes
                last = now
                first = first or now
            for role in roles:
                role.sample()
                if role.process.poll() is not None:
                    raise SystemExit(f"{role.name} exited:\n{role.tail()}")
            if not args.workers and len(store.cycles(last=2)) >= 2:  # the scheduler alone: its cycle is done
                last = now
                break
            if web_thread is None and count >= min(200, args.subscribers // 10) and args.web_seconds > 0:
                web_thread = threading.Thread(
                    target=web_phase, args=(args, web_ports, result, now - fired), daemon=True
                )
                web_thread.start()
            if count and now - last > 2.0 and len(store.cycles(last=2)) >= 2 and sql.queued_count(store) == 0:
                break
            if now > deadline:
                raise SystemExit(f"no end after {args.timeout:.0f} s: {count} sent")
            if count and int(now - fired) // 30 > shown:
                shown = int(now - fired) // 30
                print(f"  {now - fired:.0f} s: {count} sent", flush=True)
    finally:
        store.close_connection()
    if web_thread is not None:
        web_thread.join()
    return count, last - fired, first - fired, (count, size)


def web_phase(args: argparse.Namespace, ports: list[int], result: Run, at: float) -> None:
    started = time.perf_counter()
    result.web = asyncio.run(load(ports, args.clients, args.web_seconds, args.subscribers))
    result.web_window = (at, at + time.perf_counter() - started)


def last_stages(url: str) -> dict[str, float]:
    from digest.state.postgres.store import PostgresStore

    store = PostgresStore(url)
    try:
        cycles = store.cycles(last=1)
    finally:
        store.close_connection()
    record = cycles[-1] if cycles else {}
    stages = dict(record.get("stages", {}))
    stages.update({f"peak {k} MB": v for k, v in record.get("peak_mb", {}).items()})
    return stages


def report(result: Run, load_before: str, load_after: str) -> None:
    floor_mean = sum(result.floors) / len(result.floors) if result.floors else float("nan")
    scale = result.sent / result.floor_emails if result.floor_emails else 1.0
    print(f"\nmachine: {machine()}; load average before {load_before}, after {load_after}")
    if result.floors:
        head = (
            f"  cycle {result.cycle:.1f} s (fire → last email accepted; first email at {result.queued_at:.1f} s), "
            f"{result.sent} emails\n"
            f"  floor {floor_mean:.1f} s for {result.floor_emails} emails over {result.workers} connections "
            f"({' and '.join(f'{f:.1f} s' for f in result.floors)}); "
            f"scaled to the cycle's {result.sent} emails: {floor_mean * scale:.1f} s\n"
            f"  cycle / floor: {result.cycle / (floor_mean * scale):.2f}\n"
            f"  messages: the floor's {result.message_kb[0]:.1f} KB on average, "
            f"the cycle's {result.message_kb[1]:.1f} KB\n"
        )
    else:
        head = f"  the scheduler's cycle alone (--workers 0): {result.cycle:.1f} s from the fire to its record\n"
    print(
        f"{result.subscribers} subscribers × 5 rules × 2,000 papers, {result.workers} workers:\n"
        + head
        + "  scheduler's cycle stages: "
        + ", ".join(f"{k} {v:.2f}" for k, v in result.stages.items())
        + "\n  peak RSS (VmHWM): "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in result.peaks.items())
        + "\n  CPU seconds over the cycle: "
        + ", ".join(f"{k} {v:.1f}" for k, v in result.cpu.items())
        + "\n  CPU ms per email sent: "
        + ", ".join(f"{k} {v / max(1, result.sent) * 1000:.2f}" for k, v in result.cpu.items())
    )
    if result.idle_web:
        web_table(
            f"web idle, before the cycle, {sum(len(v) for v in result.idle_web.values())} requests", result.idle_web
        )
    if result.web:
        web_table(
            f"web during the cycle, {sum(len(v) for v in result.web.values())} requests from "
            f"{result.web_window[0]:.0f} to {result.web_window[1]:.0f} s into it",
            result.web,
        )


def web_table(title: str, web: dict[str, list[float | None]]) -> None:
    if web:
        print(f"  {title}:")
        print(f"    {'endpoint':<10} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        every: list[float] = []
        for name, values in web.items():
            ok = [v * 1000 for v in values if v is not None]
            every += ok
            if ok:
                print(
                    f"    {name:<10} {len(values):>8} {len(values) - len(ok):>6} {percentile(ok, 50):>8.1f} "
                    f"{percentile(ok, 99):>8.1f} {max(ok):>8.1f}"
                )
        if every:
            print(
                f"    {'all':<10} {len(every):>8} {'':>6} {percentile(every, 50):>8.1f} {percentile(every, 99):>8.1f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench postgres",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument(
        "--workers", type=int, default=4, help="digest worker processes (and floor connections); 0: the scheduler alone"
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--web-replicas", type=int, default=1, help="digest web processes; the clients take turns (round robin)"
    )
    parser.add_argument("--web-seconds", type=float, default=20.0, help="0: no web load")
    parser.add_argument("--idle-web-seconds", type=float, default=10.0, help="the same load before the cycle (0: none)")
    parser.add_argument("--floor-emails", type=int, default=0, help="emails in each floor (default: --subscribers)")
    parser.add_argument("--fire-after", type=float, default=15.0, help="seconds from start-up to the cron's fire")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep-logs", action="store_true", help="print the tail of each role's log")
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="print PostgreSQL's costliest statements and its autovacuums' CPU (its CPU then includes the statistics')",
    )
    parser.add_argument("--py-spy", default="", help="roles to profile with py-spy, e.g. worker1,scheduler,web")
    parser.add_argument(
        "--worker-calls",
        action="store_true",
        help="print the workers' CPU by call, the kernel's share included (bench.worker_calls)",
    )
    args = parser.parse_args(argv)
    load_before = " ".join(os.getloadavg().__repr__().strip("()").split(", "))
    result = run(args)
    load_after = " ".join(os.getloadavg().__repr__().strip("()").split(", "))
    report(result, load_before, load_after)


if __name__ == "__main__":
    main()
