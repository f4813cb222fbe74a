"""The cost of the most expensive rules one can write within the limits, over 2,000 papers.

"No rule can stall a cycle" must hold for any rule the parser accepts (500 characters, at most
3 regular expressions and 20 words ending in ``*``, nesting 24 deep): matches are decided by a
search (postings, set operations, positions in numpy, one RE2 search per block of papers) and the
highlights of a match are found when it is read, at most ``MAX_SPANS`` per field and part of the
rule. Each rule below is timed as a cycle's match stage runs it (a fresh ``Matcher`` over an index
whose titles and abstracts are already cut, as every rule shares that), best of ``--repeat`` runs;
then, apart, reading the highlights of the first ``SHOWN`` papers it matched, as a digest that
shows them does. The papers are the bundled sample of real listings, repeated. Figures, never
assertions: run it by hand (``python -m bench.bench_rule_cost`` or ``python -m bench rule-cost``);
results in ``bench/rules.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from digest.cycle.gc_pause import collector_paused
from digest.matching.rules import TEXT_FIELDS, ItemIndex, Matcher, parse_rules
from digest.matching.syntax import MAX_RULE_LENGTH
from digest.models import Item
from digest.sources.hf_papers import parse
from digest.sources.sample import sample_days

LIMIT_MS = 50.0
_PREFIXES = "th* co* re* in* de* pr* st* mo* pa* se* tr* ma* ge* di* ca* fo* ex* pe* an* im*"
# The costliest rules we could construct within the limits (each parses; the longest is near 500).
RULES = {
    "any character": "/./",
    "any letter": "/[a-z]/",
    "ten alternations": "/a|e|i|o|u|t|n|s|r|h/",
    "three regexes that always match": "/./ OR /[a-z]/i OR /\\w/",
    "three regexes that scan and fail": "/[aeiou].{7}zq/i OR /[a-z]{8}q{3}/ OR /\\bq{3}x/",
    "common prefix": "th*",
    "20 common prefixes": _PREFIXES.replace(" ", " OR "),
    "20 prefixes in a phrase": f'"{_PREFIXES}"',
    "common words, each alone": " OR ".join(["the", "of", "and", "a", "to", "in", "is", "we", "for", "on"] * 4),
    "long phrase of common words": '"' + " ".join(["of the"] * 60) + '"',
    "NEAR over common words": " OR ".join(["the NEAR/50 of", "and NEAR/50 a", "to NEAR/50 in", "is NEAR/50 we"] * 6),
    "deep nesting": "(" * 23 + "the" + " OR of)" * 23,
    "NOT everything": "upvotes>=0 NOT the AND NOT of AND NOT model AND NOT /./",
    "mixed worst": "/./ OR /[a-z]/ OR /\\w/ OR " + _PREFIXES.replace(" ", " OR ") + ' OR "the NEAR/50 of"',
    # As wide a window as the parser accepts (matching/regex_window.py): wider, and RE2's DFA
    # cannot hold "a vowel, then N characters" and falls back to an engine 100 times slower.
    "three regexes at the window cap": "/[aeiou][^q]{7}zq/ OR /[aeiou].{7}zq/i OR /\\w.{3}\\w.{3}zq/",
}
SHOWN = 50  # papers whose highlights are read after matching, about what a digest shows in full


def papers(count: int) -> list[Item]:
    """``count`` papers: the bundled sample's real listings, repeated under new ids."""
    base = [
        item
        for day, entries in sample_days().items()
        for item in parse(entries, "https://x", date.fromisoformat(day))[0]
    ]
    return [replace(base[k % len(base)], id=f"2611.{k:05d}") for k in range(count)]


def time_rule(index: ItemIndex, text: str, repeat: int) -> tuple[float, float, int, int]:
    """Best milliseconds of ``repeat`` runs of matching and of reading the first :data:`SHOWN`
    matches' highlights, the docs matched and the highlights read."""
    rules = parse_rules([text])
    best = shown = float("inf")
    found = {}
    spans = 0
    for _ in range(repeat):
        with collector_paused():
            started = time.perf_counter()
            found = Matcher(index).match(rules)
            matched = time.perf_counter()
            spans = sum(len(match.highlights) for doc in sorted(found)[:SHOWN] for match in found[doc])
            read = time.perf_counter()
        best = min(best, matched - started)
        shown = min(shown, read - matched)
    return best * 1000, shown * 1000, len(found), spans


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--papers", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    index = ItemIndex(papers(args.papers))
    for name in TEXT_FIELDS:
        index.field(name)
    print(f"{args.papers:,} papers; each rule best of {args.repeat} (fresh Matcher, index built)")
    print(f"   match   highlights of the first {SHOWN}")
    worst = 0.0
    for label, text in RULES.items():
        assert len(text) <= MAX_RULE_LENGTH, (label, len(text))
        ms, shown, docs, spans = time_rule(index, text, args.repeat)
        worst = max(worst, ms)
        print(f"{ms:8.1f} ms  {shown:5.1f} ms ({spans:4,})  {docs:5,} papers  {label} ({len(text)} chars)")
    verdict = "within" if worst <= LIMIT_MS else "OVER"
    print(f"most expensive: {worst:.1f} ms — {verdict} the {LIMIT_MS:.0f} ms bound")


if __name__ == "__main__":
    main()
