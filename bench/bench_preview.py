"""The sign-up form's live preview under abuse: the costliest rules the form accepts, timed.

A week of papers as the preview sees it: 7 days × 120 papers whose titles are real (the bundled
sample's) and whose abstracts are nine real sentences of the sample, reshuffled (about 210 words,
as on Daily Papers); 3-12 authors each (made-up names: the sample has none) and five keywords taken
from the abstract. Then, for each input (see :func:`inputs`; each fits the form's limits: at
most 30 rules, 500 characters a rule, 5,000 in all):

1. in process: ``preview_rules`` (check, parse, match under the caps and the time budget,
   highlight the papers shown) and the fragment's rendering, on the warm index, as the preview
   worker runs it; median and worst of several runs, and whether a cap or the budget cut it short;
2. over HTTP (``--http``, on by default): a real ``digest serve`` on 127.0.0.1 with the week stored;
   ``--clients`` threads post the input to ``/preview`` over and over with httpx while another
   times ``GET /healthz`` every 20 ms: its p50/p99/max, and the previews' own times.

Figures, never assertions (``bench/preview.md`` keeps them):

    python -m bench.bench_preview [--runs 5] [--clients 8] [--no-http] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from bench.workload import _corpus
from digest.matching.rules import TEXT_FIELDS, ItemIndex
from digest.models import Item
from digest.sources.hf_papers import parse
from digest.state.store import open_store
from digest.state.subscriptions import MAX_RULES, MAX_RULES_CHARS, check_rules
from digest.web.pages import render_page
from digest.web.preview import MAX_PREFIXES, MAX_REGEXES, MAX_TERMS, PREVIEW_DAYS, preview_rules

PER_DAY = 120
FIRST = ["Wei", "Maria", "Ahmed", "Yuki", "Olga", "Carlos", "Priya", "Jonas", "Chen", "Fatima", "Lucas", "Ana"]
LAST = ["Zhang", "Garcia", "Kim", "Novak", "Silva", "Kumar", "Schmidt", "Tanaka", "Rossi", "Okafor", "Li", "Costa"]


def week_of_papers(end: date, days: int = PREVIEW_DAYS, per_day: int = PER_DAY, seed: int = 3) -> list[Item]:
    """``days`` × ``per_day`` papers listed up to ``end``: real titles, abstracts of real sentences."""
    corpus = _corpus()
    rng = random.Random(seed)
    sentences = [s for e in corpus for s in re.split(r"(?<=\.)\s+", " ".join(e["paper"]["summary"].split()))]
    items: list[Item] = []
    for back in range(days):
        day = end - timedelta(days=back)
        entries = []
        for n in range(per_day):
            base = rng.choice(corpus)
            paper = dict(base["paper"])
            paper["id"] = f"{day:%y%m}.{day.day:02d}{n:03d}"
            paper["summary"] = " ".join(rng.sample(sentences, 9))
            paper["authors"] = [{"name": f"{rng.choice(FIRST)} {rng.choice(LAST)}"} for _ in range(rng.randint(3, 12))]
            words = re.findall(r"[A-Za-z]{4,}", paper["summary"])
            paper["ai_keywords"] = [" ".join(rng.sample(words, 2)).lower() for _ in range(5)]
            paper["submittedOnDailyAt"] = f"{day.isoformat()}T08:00:00.000Z"
            entries.append({**base, "paper": paper, "title": paper["title"]})
        parsed, _ = parse(entries, "https://huggingface.co", day)
        items.extend(parsed)
    return items


def _fill(parts: list[str], joiner: str = " OR ", limit: int = 500) -> list[str]:
    """Pack ``parts`` into rules of at most ``limit`` characters, 30 rules and 5,000 characters in all."""
    rules: list[str] = []
    line = ""
    for part in parts:
        candidate = f"{line}{joiner}{part}" if line else part
        if len(candidate) > limit:
            rules.append(line)
            line = part
            if len(rules) == MAX_RULES:
                break
        else:
            line = candidate
    if line and len(rules) < MAX_RULES:
        rules.append(line)
    while len("\n".join(rules)) > MAX_RULES_CHARS:
        rules.pop()
    return rules


def common_prefixes(index: ItemIndex, size: int) -> list[str]:
    """The two- and three-letter prefixes that cover the most word occurrences: the costliest."""
    weight: dict[str, int] = {}
    for name in TEXT_FIELDS:
        for term, docs in index.field(name).postings.items():
            for cut in (2, 3):
                if len(term) >= cut and term[:cut].isalpha():
                    weight[term[:cut]] = weight.get(term[:cut], 0) + len(docs)
    return sorted(weight, key=lambda p: -weight[p])[:size]


def common_words(index: ItemIndex, size: int) -> list[str]:
    postings = index.field("abstract").postings
    return sorted((t for t in postings if t.isalpha()), key=lambda t: -len(postings[t]))[:size]


def inputs(index: ItemIndex) -> dict[str, str]:
    """Costly rules within the form's limits; each name says what it tries. The caps stop the
    rules that go past them, so most inputs are built to reach a cap and no further."""
    prefixes = common_prefixes(index, 800)
    words = [w for w in common_words(index, 1000) if len(w) > 1]
    letters = "bcdefghijk"
    dots = ["/./", "/[a-z]/", "/\\w/", "/\\S/", "/[a-z]/i", "/[^ ]/", "/.{2}/", "/[aeiou]/", "/\\pL/", "/[b-z]/"]
    alternation = "(?:" + "|".join(words[40:80])[:150] + ")"
    slow = [f"/{alternation}{{{n}}}/i" for n in (1, 2, 3, 1, 2, 3, 1, 2, 3, 1)]
    # The classic DFA state explosion, as wide as the parser accepts (matching/regex_window.py).
    blowup = [f"/[a-q][^u-z]{{7}}x{k}/" for k in range(10)]
    top = " OR ".join(f"{p}*" for p in prefixes[:20])
    field_regexes = [f"org:/{v}/i" for v in "aeiou"] + [f"author:/{v}/" for v in "aeiou"]
    found = {
        "issue 22: 30 × (ab* OR … OR ak* N)": "\n".join(
            " OR ".join(f"a{c}*" for c in letters) + f" {n}" for n in range(MAX_RULES)
        ),
        "20 commonest prefixes (the cap)": top,
        "20 commonest prefixes, then 30 rules": "\n".join([top, *(f"{p}*" for p in prefixes[20:49])]),
        "prefix phrases (co* th* re* …)": "\n".join(
            [" ".join(f"{p}*" for p in prefixes[k : k + 5]) for k in range(0, 20, 5)]
        ),
        "prefixes in phrases of common words": "\n".join(
            f"{words[n]} {prefixes[n]}* {words[n + 1]}" for n in range(MAX_PREFIXES)
        ),
        "/./ and friends (10 regexes)": "\n".join(dots),
        "regexes that never match (full scans)": "\n".join(f"/zq{n}x\\d{{3}}/ OR /qz{n}[0-9]+y/i" for n in range(5)),
        "slow regexes (alternations)": "\n".join(slow),
        "regexes at the window cap ([a-q][^u-z]{7}x0 …)": "\n".join(blowup),
        "empty-matching regexes (/x*/)": "\n".join(f"/q{n}*/" for n in range(10)),
        "150 common words OR'ed (the cap)": "\n".join(_fill(words[:150])),
        "long phrases of common words": "\n".join(_fill([" ".join(words[k : k + 40]) for k in range(0, 900, 40)])),
        "NOT-heavy (x OR -a OR -b …)": "\n".join(
            _fill([f"{words[n]} OR " + " OR ".join(f"-{w}" for w in words[n + 1 : n + 30]) for n in range(0, 150, 30)])
        ),
        "AND of ORs of common words": "\n".join(
            "(" + " OR ".join(words[n : n + 5]) + ") (" + " OR ".join(words[n + 5 : n + 10]) + ")"
            for n in range(0, 150, 10)
        ),
        "field-scoped (author:, keyword:, org:, abstract:)": "\n".join(
            _fill(
                [f"author:{p}*" for p in prefixes[:10]]
                + [f"keyword:{w}" for w in words[:60]]
                + [f"abstract:{w}" for w in words[60:130]]
            )
            + [" OR ".join(field_regexes[k : k + 3]) for k in range(0, len(field_regexes), 3)]  # 3 a rule at most
        ),
        "nested groups (depth 20)": "\n".join(
            "(" * 20 + f"{words[n]} OR {words[n + 1]}* " + ")" * 20 + f" OR {words[n + 2]}" for n in range(20)
        ),
        "everything at its cap": "\n".join(
            [
                top,
                *slow[:5],
                *blowup[:5],
                *_fill(words[:100]),
                *(f"{w} -{v}" for w, v in zip(words[100:110], words[110:120], strict=True)),
            ][:MAX_RULES]
        ),
    }
    return found


def describe(text: str) -> str:
    lines = text.splitlines()
    return f"{len(lines)} rules, {len(text)} characters"


def time_in_process(index: ItemIndex, text: str, runs: int) -> tuple[list[float], str]:
    """Seconds per preview (check + match + render), and a word on how it ended."""
    times = []
    note = ""
    for _ in range(runs):
        started = time.perf_counter()
        preview, problems = preview_rules(text, lambda: index)
        render_page("_preview.html", preview=preview, preview_error=problems, preview_days=PREVIEW_DAYS)
        times.append(time.perf_counter() - started)
        if preview is None:
            note = "refused: " + "; ".join(problems)[:120]
        else:
            note = f"{preview.matched} matched" + (f"; {preview.notes[0][:110]}" if preview.notes else "")
    return times, note


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Served:
    """A real ``digest serve`` on a free port, with ``items`` stored."""

    def __init__(self, work: Path, items: list[Item]) -> None:
        self.data = work / "data"
        with open_store(self.data) as store:
            store.upsert_items(items, datetime.now(UTC))
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env.update(
            DIGEST_DATA_DIR=str(self.data),
            DIGEST_WEB__HOST="127.0.0.1",
            DIGEST_WEB__PORT=str(self.port),
            DIGEST_PUBLIC_URL=f"http://127.0.0.1:{self.port}",
            DIGEST_SECRET_KEY="bench-secret-key-for-the-preview",
            DIGEST_SMTP__FROM_ADDRESS="digest@bench.example",
            DIGEST_SCHEDULE__CRON="0 0 1 1 *",  # no cycle during the run
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.base}/healthz", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("digest serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def under_load(base: str, text: str, clients: int, per_client: int) -> dict[str, list[float]]:
    """``clients`` threads posting ``text`` to /preview ``per_client`` times each, while /healthz is
    timed every 20 ms; the first preview (which builds the index) is made before."""
    httpx.post(f"{base}/preview", data={"rules": "warm"}, timeout=60)
    previews: list[float] = []
    statuses: list[float] = []
    health: list[float] = []
    running = threading.Event()
    running.set()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as session:
            for _ in range(per_client):
                started = time.perf_counter()
                answer = session.post("/preview", data={"rules": text})
                previews.append(time.perf_counter() - started)
                statuses.append(answer.status_code)

    def prober() -> None:
        with httpx.Client(base_url=base, timeout=60) as session:
            while running.is_set():
                started = time.perf_counter()
                session.get("/healthz")
                health.append(time.perf_counter() - started)
                time.sleep(0.02)

    probe = threading.Thread(target=prober)
    probe.start()
    time.sleep(0.5)
    quiet = len(health)
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    running.clear()
    probe.join()
    return {"health_quiet": health[:quiet], "health": health[quiet:], "previews": previews, "status": statuses}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=12, help="previews per client (the limit is 120 a minute)")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--only", default="", help="run the inputs whose name contains this")
    args = parser.parse_args(argv)

    today = date.today()
    items = week_of_papers(today)
    started = time.perf_counter()
    index = ItemIndex(items)
    for name in TEXT_FIELDS:
        index.field(name)
    built = time.perf_counter() - started
    print(
        f"{len(items)} papers over {PREVIEW_DAYS} days; index (titles and abstracts) built in {ms(built)}; "
        f"caps: {MAX_PREFIXES} prefixes, {MAX_REGEXES} regexes, {MAX_TERMS} terms per preview"
    )
    cases = {name: text for name, text in inputs(index).items() if args.only in name}
    worst = ("", 0.0)
    for name, text in cases.items():
        assert not check_rules(text).errors, (name, check_rules(text).errors[:2])
        times, note = time_in_process(index, text, args.runs)
        if max(times) > worst[1]:
            worst = (name, max(times))
        print(f"- {name} ({describe(text)}): median {ms(statistics.median(times))}, worst {ms(max(times))} — {note}")
    print(f"worst in process: {worst[0]}, {ms(worst[1])}")
    if args.no_http:
        return
    for name, text in cases.items():
        if name != worst[0] and "issue 22" not in name:
            continue
        # A fresh server per input: the per-IP limit (120 previews a minute) counts from zero.
        with tempfile.TemporaryDirectory(prefix="digest-bench-preview-") as work:
            served = Served(Path(work), items)
            try:
                got = under_load(served.base, text, args.clients, args.per_client)
            finally:
                served.stop()
        health, previews = got["health"], got["previews"]
        codes = {int(code): got["status"].count(code) for code in sorted(set(got["status"]))}
        print(
            f"- HTTP, {args.clients} clients × {args.per_client} previews of “{name}”: /healthz p50 "
            f"{ms(statistics.median(health))}, p99 {ms(percentile(health, 0.99))}, max {ms(max(health))} "
            f"over {len(health)} probes (quiet: p50 {ms(statistics.median(got['health_quiet']))}); "
            f"previews p50 {ms(statistics.median(previews))}, max {ms(max(previews))}, statuses {codes}"
        )


if __name__ == "__main__":
    main()
