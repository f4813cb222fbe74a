"""A realistic, reproducible workload: items made from the bundled sample's real abstracts, a
500-phrase vocabulary drawn from the same text, and subscribers with 5 rules each.

Everything is seeded, so two runs on one machine measure the same work.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from datetime import date, timedelta
from typing import Any

from digest.sources.sample import sample_days
from digest.text import cut_words, fold

STOP = frozenset(
    re.findall(
        r"\w+",
        "a an the of and or for to in on with by from at as is are be we our this that these those it its their "
        "which can has have not but into than more such while via using based new also both each over how what",
    )
)


def _corpus() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entries in sample_days().values():
        for entry in entries:
            seen.setdefault(entry["paper"]["id"], entry)
    return list(seen.values())


def terms(text: str) -> list[str]:
    """The words of ``text`` as rules read them, each cut to one singular (:func:`digest.text.fold`)."""
    return [fold(word) for word in cut_words(text)[0]]


def vocabulary(size: int = 500, seed: int = 7) -> list[str]:
    """``size`` specific two-word phrases of the sample (each from a single paper), like real rules."""
    papers_with: dict[str, set[str]] = {}
    for entry in _corpus():
        low = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9-]+|\d{3,}", entry["paper"]["summary"])]
        for first, second in itertools.pairwise(low):
            if first not in STOP and second not in STOP and len(first) > 2 and len(second) > 2:
                papers_with.setdefault(f"{first} {second}", set()).add(entry["paper"]["id"])
    specific = sorted(p for p, ids in papers_with.items() if len(ids) == 1 and terms(p))
    return random.Random(seed).sample(specific, size)


def _zipf_weights(count: int) -> list[float]:
    """A long tail, but not so steep that one phrase is in every other paper."""
    return [1 / (k + 1) ** 0.5 for k in range(count)]


def items_for_day(day: date, count: int, seed: int, vocab: list[str]) -> list[dict[str, Any]]:
    """``count`` Daily-Papers API entries for ``day``: real sentences reshuffled (none holding a
    vocabulary phrase), each paper about one topic of the vocabulary, popular topics more often."""
    rng = random.Random(seed)
    corpus = _corpus()
    phrases = {tuple(terms(p)) for p in vocab}
    sentences = [
        s
        for e in corpus
        for s in re.split(r"(?<=\.)\s+", " ".join(e["paper"]["summary"].split()))
        if not _ngrams(terms(s)) & phrases
    ]
    weights = _zipf_weights(len(vocab))
    out = []
    for n in range(count):
        base = rng.choice(corpus)
        topic = rng.choices(vocab, weights)[0]
        paper = dict(base["paper"])
        paper["id"] = f"{day:%y%m}.{day.day:02d}{n:04d}"
        paper["title"] = f"Paper {n} of {day.isoformat()}"
        paper["summary"] = " ".join([*rng.sample(sentences, 4), f"We study {topic} in depth."])
        paper["upvotes"] = rng.randint(0, 60)
        paper["submittedOnDailyAt"] = f"{day.isoformat()}T08:00:00.000Z"
        out.append({**base, "paper": paper, "title": paper["title"], "numComments": rng.randint(0, 9)})
    return out


def _ngrams(words: list[str], longest: int = 4) -> set[tuple[str, ...]]:
    return {tuple(words[k : k + n]) for n in range(1, longest + 1) for k in range(len(words) - n + 1)}


def subscribers(count: int, vocab: list[str], rules_each: int = 5, seed: int = 11) -> list[str]:
    """JSON lines for ``digest import``: rules drawn with a long tail, as real interests are."""
    rng = random.Random(seed)
    weights = _zipf_weights(len(vocab))
    lines = []
    for n in range(count):
        rules: list[str] = []
        while len(rules) < rules_each:
            phrase = rng.choices(vocab, weights)[0]
            if phrase not in rules:
                rules.append(phrase)
        lines.append(json.dumps({"email": f"reader{n:05d}@bench.example", "rules": rules, "name": None}))
    return lines


def history_days(end: date, days: int) -> list[date]:
    return [end - timedelta(days=k) for k in range(days, 0, -1)]
