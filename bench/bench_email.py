"""Per-email cost: render a 20-paper digest (HTML + text) and build its MIME bytes, without and with DKIM.

The digest is the one the email tests use: the bundled sample of real Hugging Face listings,
matched by ``4090``, ``video diffusion`` and ``gaussian splatting`` (20 papers). Each figure is
the median (and 90th percentile) over many single emails, timed one by one with
``time.perf_counter_ns``, in three states of the per-process paper caches:

* **cold**: caches cleared before every email, as for the first digest that shows these papers;
* **items seen**: the papers were rendered before, for someone whose rules matched them otherwise
  (the subscriber-independent parts are reused, highlights and rules are not);
* **warm**: the same papers with the same matches were rendered before (a popular rule: most of
  a large cycle's emails).

"render" is :func:`render_digest`; "build" is :func:`build_message` and ``as_bytes()`` (the
bytes handed to SMTP). DKIM signing (RSA-2048, dkimpy) is reported apart. Figures, never
assertions: run it by hand (``python -m bench.bench_email``), never from the tests.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from digest.message import DkimKey, build_message, load_dkim_key
from digest.models import Digest, DigestEntry, Item, Subscriber
from digest.render import PAPERS, Links, RenderedDigest, item_view, rank_entries, render_digest
from digest.rules import ItemIndex, Matcher, parse_rules
from digest.settings import DkimSettings
from digest.sources.hf_papers import parse
from digest.sources.sample import SAMPLE_BASE_URL, sample_days

RULES = ("4090", "video diffusion", "gaussian splatting")
# The same papers matched otherwise: same items, different rules, so different highlights.
OTHER_RULES = ("4090", "video", "gaussian", "diffusion", "splatting")
LINKS = Links(
    view_online="https://digest.example.org/digest/0123abcd?token=eyJlIjoiYWRhQGV4YW1wbGUub3JnIiwiZCI6IjAxMjMifQ.aBcDeF.view",
    manage="https://digest.example.org/manage?token=eyJlIjoiYWRhQGV4YW1wbGUub3JnIn0.aBcDeF.manage-signature",
    unsubscribe="https://digest.example.org/unsubscribe?token=eyJlIjoiYWRhQGV4YW1wbGUub3JnIn0.aBcDeF.unsub-signature",
)
KEY_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "dkim-test-key.pem"
FROM = "papers@digest.example.org"
NOW = datetime(2026, 11, 20, 7, tzinfo=UTC)


def sample_items() -> list[Item]:
    items: dict[str, Item] = {}
    for day, entries in sorted(sample_days().items()):
        parsed, _ = parse(entries, SAMPLE_BASE_URL, date.fromisoformat(day))
        for item in parsed:
            items.setdefault(item.id, item)
    return list(items.values())


def digest_for(items: list[Item], rules: Sequence[str]) -> Digest:
    matcher = Matcher(ItemIndex(items))
    entries = [DigestEntry(items[doc], tuple(m)) for doc, m in matcher.match(parse_rules(rules)).items()]
    subscriber = Subscriber("ada.lovelace@example.org", tuple(rules), name="Ada Lovelace")
    return Digest(subscriber, rank_entries(entries), date(2026, 11, 20), "0123abcdef0123abcdef")


def clear_caches() -> None:
    item_view.cache_clear()
    PAPERS.clear()


def build(rendered: RenderedDigest, digest: Digest, key: DkimKey | None) -> bytes:
    return build_message(
        rendered,
        digest_id=digest.digest_id,
        from_address=FROM,
        to_address=digest.subscriber.email,
        to_name=digest.subscriber.name,
        unsubscribe_url=LINKS.unsubscribe,
        list_id="digest.digest.example.org",
        now=NOW,
        dkim_key=key,
    ).as_bytes()


def one_email(digest: Digest, key: DkimKey | None) -> bytes:
    return build(render_digest(digest, LINKS), digest, key)


def timed(work: Callable[[], object], before: Callable[[], object], runs: int) -> list[float]:
    """Microseconds per call of ``work``, ``before`` run untimed ahead of each."""
    for _ in range(min(50, runs)):
        before()
        work()
    samples = []
    for _ in range(runs):
        before()
        start = time.perf_counter_ns()
        work()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def line(label: str, samples: list[float]) -> str:
    deciles = statistics.quantiles(samples, n=10)
    return f"{label:<44} median {statistics.median(samples):8.0f} µs   p90 {deciles[-1]:8.0f} µs"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2000, help="emails timed per figure (default 2000)")
    args = parser.parse_args(argv)

    items = sample_items()
    digest = digest_for(items, RULES)
    other = digest_for(items, OTHER_RULES)
    key = load_dkim_key(DkimSettings(selector="mail", private_key_file=KEY_FILE), FROM)
    rendered = render_digest(digest, LINKS)
    raw = one_email(digest, None)
    print(
        f"{len(digest.entries)} papers; HTML {len(rendered.html.encode()):,} B, text {len(rendered.text.encode()):,} B,"
        f" message {len(raw):,} B; Python {platform.python_version()}, {platform.machine()}"
    )

    def nothing() -> None:
        return None

    def items_seen() -> None:
        clear_caches()
        render_digest(other, LINKS)  # the same items, other highlights

    states: list[tuple[str, Callable[[], object]]] = [
        ("cold", clear_caches),
        ("items seen", items_seen),
        ("warm", nothing),
    ]
    gc.collect()
    for state, before in states:
        print(line(f"{state}: render", timed(lambda: render_digest(digest, LINKS), before, args.runs)))
    ready = render_digest(digest, LINKS)
    build_only = timed(lambda: build(ready, digest, None), nothing, args.runs)
    print(line("build + serialise", build_only))
    for state, before in states:
        print(line(f"{state}: render + build + serialise", timed(lambda: one_email(digest, None), before, args.runs)))
    dkim_runs = max(50, args.runs // 10)
    print(line("DKIM: build + serialise + sign", timed(lambda: build(ready, digest, key), nothing, dkim_runs)))
    print(line("warm: render + build + serialise + sign", timed(lambda: one_email(digest, key), nothing, dkim_runs)))


if __name__ == "__main__":
    main()
