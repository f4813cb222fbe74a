"""Render cost in a cycle's mix: every digest of one bench day rendered and built in one process.

``bench_email`` times one 20-paper digest in three cache states; a real cycle mixes them, in the
proportions its subscribers' rules give. This plans one day of the cycle benchmark's workload
(2,000 papers, N subscribers × 5 rules from the same 500-phrase vocabulary, no history) with the
cycle's own :func:`plan_digests`, then renders each digest (:func:`render_digest`) with the links a
cycle gives it (signed, a paper's two vote links included: :func:`digest_links`) and builds its
bytes (:func:`digest_message`, no DKIM) one after another, as a worker does, without the SMTP
server or the database. ``--queued``: each digest first goes through the queue's JSON as a
worker reads it back (:func:`digest_record`, ``json``, :func:`digest_from_record`, its papers
from one lookup for the day), so its entries are new objects per email, as in a worker.
Reported: CPU time of the loop (``time.thread_time``), so a busy neighbour on a shared machine
weighs less than on wall time, and per email.

Figures, never assertions: run it by hand (``python -m bench.bench_cycle_render``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime

from bench.workload import items_for_day, subscribers, vocabulary
from digest.cycle.compose import digest_message
from digest.cycle.links import digest_links
from digest.cycle.plan import plan_digests
from digest.cycle.queue import digest_from_record, digest_record
from digest.mail.paper_cache import PAPERS
from digest.mail.render import Links, render_digest
from digest.models import Subscriber
from digest.signing import Signer
from digest.sources.hf_papers import parse

DAY = date(2026, 11, 20)
LINKS = Links(
    view_online="https://digest.example.org/digest/0123abcd?token=view-token",
    manage="https://digest.example.org/manage?token=manage-token",
    unsubscribe="https://digest.example.org/unsubscribe?token=unsubscribe-token",
)
SIGNER = Signer("bench-secret-key-bench-secret-key")
NOW = datetime(2026, 11, 20, 7, tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--no-links", action="store_true", help="fixed links without votes (as before 2026-12-07)")
    parser.add_argument("--queued", action="store_true", help="each digest read back from the queue's JSON first")
    args = parser.parse_args(argv)

    vocab = vocabulary()
    items, _ = parse(items_for_day(DAY, args.items, 1, vocab), "https://huggingface.co", DAY)
    people = [Subscriber(d["email"], tuple(d["rules"])) for d in map(json.loads, subscribers(args.subscribers, vocab))]
    plan = plan_digests(people, items, lambda email, since: set(), DAY, DAY, DAY)
    papers = sum(len(d.entries) for d in plan.digests)
    by_id = {item.id: item for item in items}  # the day's papers, as a worker's ItemCache has them
    records = [json.dumps(digest_record(d, "")) for d in plan.digests] if args.queued else []

    cpu, wall = time.thread_time(), time.perf_counter()
    size = 0
    for n, digest in enumerate(plan.digests):
        if args.queued:
            digest, _ = digest_from_record(json.loads(records[n]), digest.subscriber, lambda ids: by_id)
        links = LINKS if args.no_links else digest_links(SIGNER, "https://digest.example.org", digest)
        rendered = render_digest(digest, links)
        size += len(digest_message(digest, rendered, links, "papers@digest.example.org", NOW, None).as_bytes())
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall

    count = max(1, len(plan.digests))
    print(
        f"{len(plan.digests):,} digests ({papers / count:.1f} papers, {size / count / 1024:.1f} KB each on average),"
        f" {len(PAPERS):,} paper blocks rendered"
    )
    print(f"render + build: CPU {cpu:.2f} s, wall {wall:.2f} s; {cpu / count * 1000:.2f} ms of CPU per email")


if __name__ == "__main__":
    main()
