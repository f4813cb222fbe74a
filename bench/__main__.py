"""``make bench``: a real ``digest run`` on generated workloads, next to the SMTP floor.

For each size (subscribers × 5 rules from a 500-phrase vocabulary) it builds a data dir whose store
holds a year of history (50,000 seen items; the delivery ledger as a year of daily cycles leaves it
after pruning), imports the subscribers with ``digest import``, serves 2,000 new items from a local
Daily Papers API, and runs ``digest run`` as a subprocess against an aiosmtpd server in another
process. It prints wall time, peak memory, the cycle's own per-stage times and the CPU time of the
cycle and of the SMTP server, then the floor: the same number of pre-built messages pushed to the
same server over one connection with the cycle's own SMTP client, just before and just after the
cycle; the ratio is over their mean
(``--smtplib-floor`` also times it with ``smtplib`` as it comes, as earlier results did). The
floor's messages are the cycle's own, built before it for subscribers spread over the whole list;
the server counts the bytes of both, and the report prints their mean sizes side by side.

    python -m bench [--sizes 100,1000,10000] [--items 2000] [--seen 50000] [--history-days 365] [--repeat 1]

``python -m bench rule-cost`` and ``python -m bench postgres`` (the roles on PostgreSQL, issue 30:
``bench/bench_postgres.py``, ``--help`` there) are their own benches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.workload import history_days, items_for_day, subscribers, vocabulary
from digest.cycle.compose import digest_message
from digest.cycle.days import window_days
from digest.cycle.links import digest_links
from digest.cycle.plan import candidate_start, plan_digests
from digest.mail.mailer import SmtpConnection
from digest.mail.render import render_digest
from digest.settings import Settings
from digest.signing import Signer
from digest.sources.hf_papers import parse
from digest.state.store import Store, open_store
from tests.servers import FakeHfApi

TODAY = date(2026, 11, 20)


@dataclass
class Result:
    label: str
    subscribers: int
    history: int
    wall: float = 0.0
    peak_mb: float = 0.0
    summary: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    floors: tuple[float, float] = (0.0, 0.0)  # before and after the cycle
    message_kb: tuple[float, float] = (0.0, 0.0)  # the mean size of the floor's messages and of the cycle's
    smtplib_floor: float = 0.0
    # CPU seconds (user + system): the cycle process with its render process, the SMTP server
    # during the cycle, and during the floor after it the sender (this process) and the server.
    cycle_cpu: float = 0.0
    server_cpu_cycle: float = 0.0
    floor_cpu: tuple[float, float] = (0.0, 0.0)

    @property
    def floor(self) -> float:
        """The mean of the floors timed around the cycle."""
        return sum(self.floors) / len(self.floors)


class SmtpServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.smtp_sink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (user + system), from /proc; 0 where there is none."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def take(self) -> tuple[int, int]:
        """Messages and bytes the server received since the last call."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("take\n")
        self.process.stdin.flush()
        count, size = self.process.stdout.readline().split()
        return int(count), int(size)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def mean_kb(counts: tuple[int, int]) -> float:
    count, size = counts
    return size / count / 1024 if count else 0.0


def build_history(data_dir: Path, vocab: list[str], people: list[dict[str, Any]], seen: int, days: int) -> None:
    """A store as ``days`` of daily cycles would leave it: ``seen`` item ids over the period, and for
    every subscriber 20 papers a day over the retention window (older ones the cycles pruned)."""
    if days <= 0:
        return
    per_day = max(1, seen // days)
    now = datetime.now(UTC)
    rng = random.Random(5)
    retention = store_retention_days()
    with open_store(data_dir) as store:
        for n, day in enumerate(history_days(TODAY, days)):
            entries = items_for_day(day, per_day, seed=1000 + n, vocab=vocab)
            items, _ = parse(entries, "https://huggingface.co", day)
            store.upsert_items(items, now)
        recent = store.items_listed_between(TODAY - timedelta(days=retention), TODAY - timedelta(days=1))
        by_day: dict[str, list[str]] = {}
        for item in recent:
            by_day.setdefault(item.listed_on.isoformat(), []).append(item.id)
        for person in people:
            got = {item_id: day for day, ids in by_day.items() for item_id in rng.sample(ids, min(20, len(ids)))}
            # What a year of recorded deliveries (Store.record_note) would have left, without a year of journal lines.
            store._add_to_ledger(person["email"], got)
        store.prune(TODAY - timedelta(days=retention))


def store_retention_days() -> int:
    from digest.settings import Settings

    return Settings().retention_days


def run_cycle(data_dir: Path, api: FakeHfApi, smtp_port: int) -> tuple[float, float, str]:
    """``digest run`` as a subprocess: its wall time, its CPU time (with the render process it
    forks and waits for), and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATA_DIR=str(data_dir),
        DIGEST_SOURCES__HF_PAPERS__BASE_URL=api.base_url,
        DIGEST_SOURCES__HF_PAPERS__PAGE_SIZE="100",
        DIGEST_SMTP__HOST="127.0.0.1",
        DIGEST_SMTP__PORT=str(smtp_port),
        DIGEST_SMTP__SECURITY="none",
        DIGEST_SMTP__FROM_ADDRESS="digest@bench.example",
        DIGEST_PUBLIC_URL="https://digest.bench.example",
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "run", "--date", TODAY.isoformat()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"digest run failed:\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, (out.strip() or err.strip())


def last_cycle(data_dir: Path) -> dict[str, Any]:
    data = json.loads((data_dir / "digest.json").read_text())
    cycles = list(data.get("cycles", {}).values())
    return cycles[-1] if cycles else {}


def smtp_floor(port: int, messages: list[bytes], count: int, client: type[smtplib.SMTP] = SmtpConnection) -> float:
    """``count`` pre-built messages (``messages`` over and over) pushed over one connection: what
    the cycle cannot beat.

    By default with the client the cycle itself uses (smtplib without its dot-stuffing pass over
    messages that need none); ``smtplib.SMTP`` as it comes gives the floor of earlier results.
    """
    started = time.perf_counter()
    with client("127.0.0.1", port) as connection:
        for n in range(count):
            connection.sendmail("digest@bench.example", [f"reader{n:05d}@bench.example"], messages[n % len(messages)])
    return time.perf_counter() - started


def sample_messages(data_dir: Path, entries: list[dict[str, Any]], count: int = 200) -> list[bytes]:
    """The messages of ``count`` subscribers spread over the whole list, planned, rendered and built
    as the cycle about to run will build them (links signed as it signs them): the floor's messages.

    Planned on a snapshot of the scenario's store with the day's papers added in memory, so a
    store with history gives the digests that history leaves (papers of earlier days of the
    look-back window, minus those already delivered). Spread, not the first ``count``: a digest's
    size follows its rules, not its position in the list.
    """
    items, _ = parse(entries, "https://huggingface.co", TODAY)
    store = Store(data_dir, writable=False)  # changes stay in memory
    store.upsert_items(items, datetime.now(UTC))
    people = store.subscribers(active_only=True)
    readers = people[:: max(1, len(people) // count)][:count]
    window_start = window_days(TODAY, Settings(data_dir=data_dir).lookback_days)[0]
    floor = store.candidate_floor()
    candidates = store.items_listed_between(candidate_start(readers, window_start, floor), TODAY)
    plan = plan_digests(readers, candidates, store.delivered_ids, window_start, floor, TODAY)
    signer = Signer("bench-secret")
    now = datetime.now(UTC)
    messages = []
    for digest in plan.digests:
        links = digest_links(signer, "https://digest.bench.example", digest)
        messages.append(digest_message(digest, render_digest(digest, links), links, "digest@bench.example", now).raw)
    return messages or [b"Subject: empty\r\n\r\nempty\r\n"]


def scenario(
    size: int, history: int, args: argparse.Namespace, vocab: list[str], api: FakeHfApi, entries: list[dict[str, Any]]
) -> Result:
    """One cycle, with the floor measured just before and just after it on the same server: this
    VM's speed drifts from one minute to the next, and the cycle is compared with their mean."""
    result = Result(f"{size} subscribers, day {history} of history", size, history)
    with tempfile.TemporaryDirectory(prefix="digest-bench-", dir=args.workdir) as work:
        data_dir = Path(work) / "data"
        lines = subscribers(size, vocab)
        people = [json.loads(line) for line in lines]
        jsonl = Path(work) / "subscribers.jsonl"
        jsonl.write_text("\n".join(lines) + "\n")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}, "DIGEST_DATA_DIR": str(data_dir)}
        subprocess.run([sys.executable, "-m", "digest", "import", str(jsonl)], env=env, check=True, capture_output=True)
        seen = args.seen if history > 1 else args.items
        build_history(data_dir, vocab, people, seen if history > 1 else 0, history - 1)
        messages = sample_messages(data_dir, entries)
        smtp = SmtpServer()
        try:
            floor_before = smtp_floor(smtp.port, messages, size)
            floor_counts = smtp.take()
            server_before = smtp.cpu_seconds()
            result.wall, result.cycle_cpu, result.summary = run_cycle(data_dir, api, smtp.port)
            server_after = smtp.cpu_seconds()
            result.server_cpu_cycle = server_after - server_before
            cycle_counts = smtp.take()
            sender_before = time.process_time()
            floor_after = smtp_floor(smtp.port, messages, size)
            result.floor_cpu = (time.process_time() - sender_before, smtp.cpu_seconds() - server_after)
            result.floors = (floor_before, floor_after)
            result.message_kb = (mean_kb(floor_counts), mean_kb(cycle_counts))
            if args.smtplib_floor:
                result.smtplib_floor = smtp_floor(smtp.port, messages, size, smtplib.SMTP)
            cycle = last_cycle(data_dir)
            result.stages = cycle.get("stages", {})
            result.peak = cycle.get("peak_mb", {})
            # ru_maxrss of a child counts the parent's pages at fork: the cycle's own VmHWM is the truth,
            # plus what its render process held of its own.
            own = [mb for stage, mb in result.peak.items() if stage != "render_process"]
            result.peak_mb = max(own, default=0.0) + result.peak.get("render_process", 0.0)
            result.sent = int(cycle.get("sent", 0))
        finally:
            smtp.close()
    return result


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
    )


def main() -> None:
    if sys.argv[1:2] == ["rule-cost"]:  # python -m bench rule-cost: the costliest rules (bench/rules.md)
        from bench.bench_rule_cost import main as rule_cost

        return rule_cost(sys.argv[2:])
    if sys.argv[1:2] == ["postgres"]:  # python -m bench postgres: the roles on PostgreSQL (bench/postgres.md)
        from bench.bench_postgres import main as postgres

        return postgres(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seen", type=int, default=50000)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--workdir", default=None, help="where to build the throw-away data dirs")
    parser.add_argument(
        "--smtplib-floor", action="store_true", help="also time the floor with smtplib's own DATA (earlier results)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per scenario (the machine's speed drifts: compare medians)"
    )
    args = parser.parse_args()
    vocab = vocabulary()
    entries = items_for_day(TODAY, args.items, seed=1, vocab=vocab)
    api = FakeHfApi(days={TODAY.isoformat(): entries}).start()
    print(f"machine: {machine()}")
    print(f"workload: {args.items} new items, 5 rules per subscriber from {len(vocab)} phrases\n")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            for history in (1, args.history_days):
                results = [scenario(size, history, args, vocab, api, entries) for _ in range(args.repeat)]
                for result in results:
                    report(result)
                if len(results) > 1:
                    ratios = sorted(ratio(r) for r in results)
                    print(
                        f"{results[0].label}, {len(results)} runs: cycle/floor median {statistics.median(ratios):.2f} "
                        f"({ratios[0]:.2f}–{ratios[-1]:.2f}), peak memory at most "
                        f"{max(r.peak_mb for r in results):.0f} MB"
                    )
    finally:
        api.stop()


def ratio(result: Result) -> float:
    return result.wall / result.floor if result.floor else float("nan")


def report(result: Result) -> None:
    stages = ", ".join(
        f"{k} {v:.2f}s" + (f"/{result.peak[k]:.0f}MB" if k in result.peak else "") for k, v in result.stages.items()
    )
    if "render_process" in result.peak:
        stages += f" (render process: {result.peak['render_process']:.0f} MB of its own)"
    print(
        f"{result.label}: cycle {result.wall:.2f}s, peak {result.peak_mb:.0f} MB, "
        f"floor {result.floor:.2f}s (before {result.floors[0]:.2f}s, after {result.floors[1]:.2f}s), "
        f"cycle/floor {ratio(result):.2f}"
        + (f" (floor with smtplib's own DATA: {result.smtplib_floor:.2f}s)" if result.smtplib_floor else "")
        + f"\n  {result.summary}\n"
        f"  messages: the floor's {result.message_kb[0]:.1f} KB on average, the cycle's {result.message_kb[1]:.1f} KB\n"
        f"  stages (time/peak memory): {stages}\n"
        f"  CPU: the cycle {result.cycle_cpu:.1f}s (with its render process) and the SMTP server"
        f" {result.server_cpu_cycle:.1f}s over its {result.wall:.1f}s;"
        f" the floor after it: sender {result.floor_cpu[0]:.1f}s, server {result.floor_cpu[1]:.1f}s"
        f" over {result.floors[1]:.1f}s",
        flush=True,
    )


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    main()
