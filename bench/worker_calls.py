"""``digest worker`` with the CPU of its main calls counted: ``python -m bench.worker_calls OUT worker``.

``python -m bench postgres --worker-calls`` starts its workers through this module. It wraps the
calls listed in :data:`CALLS` so each one adds its thread's CPU time (``time.thread_time``) and
its wall time to a table, then runs ``digest worker`` as ever. When the worker stops, the table
goes to ``OUT`` as JSON, and :func:`report` sums the workers' tables.

Why ``thread_time`` and not ``getrusage(RUSAGE_THREAD)``: the latter reads the thread's run time
as the kernel last updated it, at a context switch or a tick. CPU spent since then is counted in
the next call that blocks, so a socket read takes the blame for the render before it (measured:
the SMTP client 1.5 ms an email instead of 0.5). ``thread_time`` brings the kernel's count up to
date before reading it.

py-spy (``--py-spy``) shows which Python functions hold the GIL; this shows where a worker's whole
CPU goes, the kernel's share of its socket and file calls included. Each wrapped call costs about
two microseconds more. Figures only, for a run by hand.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (module, attribute path, label): inclusive, so a call inside another counts in both. The first is
# the whole of each turn of the loop: the kept unsubscribes checked, then the claim to the commit;
# its calls include the polls that found nothing ready (about one a second a worker when idle).
CALLS: tuple[tuple[str, str, str], ...] = (
    ("digest.cycle.queue", "Worker.once", "a whole email (Worker.once)"),
    ("digest.cycle.compose", "Composer.compose", "render and build the message"),
    ("digest.mail.mailer", "SmtpMailer.send", "SMTP conversation"),
    ("pathlib", "Path.write_bytes", "archive page written"),  # the only write_bytes of a sending worker
    ("digest.state.postgres.queue", "finish_sent", "finish_sent statement"),
    ("digest.state.postgres.queue", "claim", "claim statement"),
    ("digest.state.postgres.queue", "delivered_among", "delivered_among statement"),
    ("digest.cycle.queue", "digest_from_record", "queued digest read back"),
    ("logging", "Logger.info", "log line"),
    ("digest.state.postgres.store", "PostgresStore.delivery_note", "delivery note"),
    ("digest.state.postgres.store", "PostgresStore.take_departures", "kept unsubscribes checked"),
    ("digest.cycle.queue", "archive_dir", "archive folder checked"),
    ("psycopg", "Transaction.__enter__", "BEGIN"),
    ("psycopg", "Transaction.__exit__", "COMMIT"),
)
TOTAL = CALLS[0][2]


def _counted(function: Callable[..., Any], row: list[float]) -> Callable[..., Any]:
    @functools.wraps(function)
    def counted(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            row[0] += 1
            row[1] += time.thread_time() - cpu
            row[2] += time.perf_counter() - wall

    return counted


def install() -> dict[str, list[float]]:
    """Wrap every call of :data:`CALLS`; returns the table they fill (label → calls, CPU, wall)."""
    table: dict[str, list[float]] = {}
    for module_name, path, label in CALLS:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        table[label] = [0, 0.0, 0.0]
        setattr(owner, name, _counted(getattr(owner, name), table[label]))
    return table


def main() -> None:
    out, role = Path(sys.argv[1]), sys.argv[2:]
    table = install()
    from digest.cycle import queue

    run = queue.Worker.run

    def run_then_write(self: queue.Worker, until_empty: bool = False) -> int:
        try:
            return run(self, until_empty)
        finally:
            out.write_text(json.dumps({"sent": self.sent, "calls": table}))

    queue.Worker.run = run_then_write  # type: ignore[method-assign]
    from digest.ops.cli import main as digest_main

    sys.argv = ["digest", *role]
    digest_main()


def report(files: list[Path]) -> str:
    """The workers' tables summed: each call's CPU an email sent, its share of a whole email's, and
    its wall time an email (waits included)."""
    sent, summed = 0, {label: [0.0, 0.0, 0.0] for _, _, label in CALLS}
    missing: list[str] = []
    for file in files:
        if not file.exists():  # killed before it could write
            missing.append(file.name)
            continue
        found = json.loads(file.read_text())
        sent += found["sent"]
        for label, row in found["calls"].items():
            summed[label] = [a + b for a, b in zip(summed[label], row, strict=True)]
    if not sent:
        return "  no worker sent anything"
    whole = summed[TOTAL][1] or 1.0
    lines = [f"  {'call':34} {'calls':>8} {'CPU ms/email':>13} {'share':>6} {'wall ms/email':>14}"]
    for label, (calls, cpu, wall) in sorted(summed.items(), key=lambda kv: -kv[1][1]):
        per_email, share = cpu / sent * 1000, 100 * cpu / whole
        lines.append(f"  {label:34} {int(calls):8,} {per_email:13.3f} {share:5.1f}% {wall / sent * 1000:14.3f}")
    unaccounted = whole - sum(cpu for label, (_, cpu, _) in summed.items() if label != TOTAL)
    # Apart from the whole, no call of CALLS runs inside another (a rare log line aside): what they
    # leave of the whole is the code between them.
    rest, rest_share = unaccounted / sent * 1000, 100 * unaccounted / whole
    lines.append(f"  {'the rest (not wrapped)':34} {'':8} {rest:13.3f} {rest_share:5.1f}%")
    if missing:
        lines.append(f"  no table from {', '.join(missing)} (not stopped cleanly): left out")
    return f"{sent:,} emails sent by the workers\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
