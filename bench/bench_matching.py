"""Matching cost: digest's shared index and evaluator next to a naive per-subscriber scan, one run.

Synthetic but shaped like a busy cycle: 10,000 subscribers × 5 rules drawn (popular topics more
often) from a vocabulary of 500 phrases, against 2,000 items with a title and a 120-200 word
abstract. Reported: wall time and peak memory (tracemalloc, in a second pass so that tracing does
not slow the timed one) for

* digest: build the :class:`ItemIndex` once, then ``parse_rules`` + ``Matcher.match`` per subscriber;
* naive: fold each item's text once, then for every subscriber × rule × item a substring search,
  measured on a sample of subscribers and scaled to all of them (the full run takes minutes).

Both must find the same matches on the sample; the script says so. Figures, never assertions:
run it by hand (``python -m bench.bench_matching``), never from the tests.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from bench.workload import terms
from digest.cycle.gc_pause import collector_paused
from digest.matching.rules import TEXT_FIELDS, ItemIndex, Matcher, parse_rules
from digest.models import Item, RuleMatch

T = TypeVar("T")
Matches = dict[int, tuple[RuleMatch, ...]]
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "xe", "zu", "ba", "de", "fi", "go", "hu", "ja", "ke", "li")


@dataclass(frozen=True)
class World:
    items: list[Item]
    subscribers: list[list[str]]


def make_world(seed: int, n_items: int, n_subscribers: int, n_rules: int, n_phrases: int) -> World:
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(6000)})[:4000]
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf-like, as in real text
    # Topics are rarer than filler words: phrases of 1-3 words from below the 800 most common.
    topics = words[800:]
    phrases = sorted({" ".join(rng.sample(topics, rng.choice((1, 2, 2, 3)))) for _ in range(n_phrases * 2)})
    phrases = rng.sample(phrases, n_phrases)

    def text(n_words: int, n_phrases_in: int) -> str:
        chunks = rng.choices(words, weights, k=n_words)
        for phrase in rng.sample(phrases, n_phrases_in):
            chunks.insert(rng.randrange(len(chunks) + 1), phrase.title() if rng.random() < 0.3 else phrase)
        return " ".join(chunks)

    items = [
        Item(
            id=f"2611.{k:05d}",
            source="bench",
            title=text(rng.randint(8, 14), rng.randint(0, 1)),
            abstract=text(rng.randint(120, 200), rng.randint(0, 3)),
            url=f"https://example.org/{k}",
            listed_on=date(2026, 11, 20),
        )
        for k in range(n_items)
    ]
    popularity = [1 / (rank + 1) ** 0.8 for rank in range(len(phrases))]
    subscribers = [list(dict.fromkeys(rng.choices(phrases, popularity, k=n_rules))) for _ in range(n_subscribers)]
    return World(items, subscribers)


def digest_matching(world: World, subscribers: Sequence[list[str]]) -> tuple[dict[int, Matches], float, float]:
    """(subscriber → matched docs, index seconds, match seconds), as a cycle's match stage runs it.

    The index tokenizes a field when a rule first asks for it; it is asked here up front for the
    titles and abstracts that plain rules search, so that the two figures stay apart.
    """
    with collector_paused():
        started = time.perf_counter()
        index = ItemIndex(world.items)
        for name in TEXT_FIELDS:
            index.field(name)
        matcher = Matcher(index)
        indexed = time.perf_counter()
        found = {n: matcher.match(parse_rules(rules)) for n, rules in enumerate(subscribers)}
        return found, indexed - started, time.perf_counter() - indexed


def naive_matching(world: World, subscribers: Sequence[list[str]]) -> tuple[dict[int, set[int]], float, float]:
    """The same semantics by brute force: a substring search per subscriber × rule × item."""
    started = time.perf_counter()
    folded = [f" {' '.join(terms(i.title))} \x00 {' '.join(terms(i.abstract))} " for i in world.items]
    prepared = time.perf_counter()
    found: dict[int, set[int]] = {}
    for n, rules in enumerate(subscribers):
        needles = [f" {' '.join(terms(rule))} " for rule in rules]
        found[n] = {doc for doc, text in enumerate(folded) for needle in needles if needle in text}
    return found, prepared - started, time.perf_counter() - prepared


def peak_mib(run: Callable[[], T]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=5, help="rules per subscriber")
    parser.add_argument("--phrases", type=int, default=500, help="size of the rule vocabulary")
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--naive-sample", type=int, default=200, help="subscribers the naive scan really runs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=4, help="extra timed runs (the median is reported)")
    args = parser.parse_args(argv)

    world = make_world(args.seed, args.items, args.subscribers, args.rules, args.phrases)
    sample = world.subscribers[: args.naive_sample]
    scale = len(world.subscribers) / max(1, len(sample))
    distinct = len({rule for rules in world.subscribers for rule in rules})
    print(
        f"{len(world.subscribers):,} subscribers × {args.rules} rules ({distinct} distinct, from {args.phrases} "
        f"phrases) against {len(world.items):,} items"
    )

    runs = []
    for _ in range(args.repeat):
        found, index_s, match_s = digest_matching(world, world.subscribers)
        runs.append((index_s + match_s, index_s, match_s))
        del found
    found, index_s, match_s = digest_matching(world, world.subscribers)
    runs.append((index_s + match_s, index_s, match_s))
    digest_mib = peak_mib(lambda: digest_matching(world, world.subscribers))
    naive_found, prep_s, scan_s = naive_matching(world, sample)
    naive_mib = peak_mib(lambda: naive_matching(world, sample))
    same = all(found[n].keys() == naive_found[n] for n in range(len(sample)))
    matched = sum(len(docs) for docs in found.values())

    runs.sort()
    total, index_s, match_s = runs[len(runs) // 2]
    print(
        f"digest: index {index_s:.2f} s + match {match_s:.2f} s = {total:.2f} s (median of {len(runs)} runs; "
        f"fastest {runs[0][0]:.2f} s, slowest {runs[-1][0]:.2f} s); peak {digest_mib:.0f} MiB"
    )
    print(
        f"naive:  fold {prep_s:.2f} s + scan {scan_s:.2f} s for {len(sample)} subscribers → "
        f"≈ {prep_s + scan_s * scale:.0f} s for all; peak {naive_mib:.0f} MiB (sample)"
    )
    print(f"speed-up ≈ {(prep_s + scan_s * scale) / total:.0f}×; {matched:,} (subscriber, item) matches")
    print(f"same matches as the naive scan on the {len(sample)} sampled subscribers: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
