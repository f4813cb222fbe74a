"""Fixed, realistic digests for the email tests, built from the bundled sample of real listings.

The items go through the real parser (``hf_papers.parse``) and the real matcher, so the email is
tested on what a cycle would hand it: real titles and abstracts, real highlights.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import replace
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

from digest.mail.render import Links
from digest.matching.ranking import rank_entries
from digest.matching.rules import ItemIndex, Matcher, parse_rules
from digest.models import Digest, DigestEntry, Item, Subscriber
from digest.sources.hf_papers import parse
from digest.sources.sample import SAMPLE_BASE_URL, sample_days, with_search_links

AS_OF = date(2026, 11, 20)
SAMPLE_RULES = ("4090", "video diffusion", "gaussian splatting")
LINKS = Links(
    view_online="https://digest.example.org/digest/0123abcd?token=view.t0k3n",
    manage="https://digest.example.org/manage?token=manage.t0k3n",
    unsubscribe="https://digest.example.org/unsubscribe?token=unsub.t0k3n",
)


def sample_items() -> list[Item]:
    """The sample's items, one per id as the store keeps them (a paper listed twice keeps its first day),
    each linking to a search for its title as the demo's do (the sample's ids are made up)."""
    items: dict[str, Item] = {}
    for day, entries in sorted(sample_days().items()):
        parsed, warnings = parse(entries, SAMPLE_BASE_URL, date.fromisoformat(day))
        assert not warnings
        for item in with_search_links(parsed):
            items.setdefault(item.id, item)
    return list(items.values())


def digest_for(
    items: list[Item], rules: tuple[str, ...], email: str = "ada@example.org", notices: list[str] | None = None
) -> Digest:
    matcher = Matcher(ItemIndex(items))
    entries = [DigestEntry(items[doc], m) for doc, m in matcher.match(parse_rules(rules)).items()]
    subscriber = Subscriber(email, rules, name="Ada")
    return Digest(subscriber, rank_entries(entries), AS_OF, "0123abcd", list(notices or []))


def sample_digest() -> Digest:
    """Ada's digest from the sample: a dozen papers, several rules, some matched in the title."""
    return digest_for(sample_items(), SAMPLE_RULES)


def huge_digest(papers: int = 200) -> Digest:
    """A 200-paper day: the sample's matched papers repeated under new ids (their highlights still fit)."""
    base = digest_for(sample_items(), ("model", "the", "we"))
    entries = []
    for n in range(papers):
        entry = base.entries[n % len(base.entries)]
        item = replace(entry.item, id=f"2611.{n:05d}", url=f"{SAMPLE_BASE_URL}/papers/2611.{n:05d}")
        entries.append(DigestEntry(item, entry.matches))
    base.entries = rank_entries(entries)
    return base


ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
REAL_DAY_PAPERS = 119


def _build_sample() -> ModuleType:
    """``scripts/build_sample.py``, which reads the saved pages, as a module."""
    spec = importlib.util.spec_from_file_location("build_sample", ROOT / "scripts" / "build_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_items() -> list[Item]:
    """Every paper of the saved Daily Papers pages in ``../shared/seeds`` (real titles and
    abstracts, made-up ids), through the real parser. Skipped when the pages are not there, except
    in CI, where they must be."""
    pages = sorted(SEEDS.glob("*.txt"))
    if not pages:
        if os.environ.get("CI"):
            pytest.fail(f"no saved listing pages in {SEEDS}: CI runs beside ../shared")
        pytest.skip(f"no saved listing pages in {SEEDS}")
    build = _build_sample()
    items: dict[str, Item] = {}
    for page in pages:
        entries = [build.api_entry(paper, AS_OF) for paper in build.parse_seed(page.read_text(encoding="utf-8"))]
        parsed, warnings = parse(entries, SAMPLE_BASE_URL, AS_OF)
        assert not warnings
        for item in parsed:
            items.setdefault(item.id, item)
    return list(items.values())


def real_day(papers: int = REAL_DAY_PAPERS) -> list[Item]:
    """A big day of real listings: the saved pages' papers, and as many again under new ids as it
    takes to make ``papers`` (a day of 119 was the one that went past Gmail's clip)."""
    base = seed_items()
    return [
        item if n < len(base) else replace(item, id=f"{item.id}-{n}", url=f"{item.url}-{n}")
        for n, item in ((n, base[n % len(base)]) for n in range(papers))
    ]


def hostile_digest() -> Digest:
    """Text no feed should be trusted with: markup, an unbreakable token, scripts of all kinds, gaps."""
    long_token = "Supercalifragilistic" * 12
    items = [
        Item(
            id="x1",
            source="hf_papers",
            title='<script>alert("4090")</script> RTX 4090 & <b>bold</b> claims',
            abstract=f'We run on an RTX 4090 <img src=x onerror=alert(1)>. See {long_token}. "Quotes" & more.',
            url="https://huggingface.co/papers/x1?a=1&b=<2>",
            listed_on=AS_OF,
            authors=tuple(f"Author <{n}>" for n in range(9)),
            upvotes=1,
            comments=1,
            github_repo="https://github.com/example/repo?x=\"'><script>",
            organization="Org & <Lab>",
        ),
        Item(
            id="x2",
            source="hf_papers",
            title=f"{long_token} 4090",
            abstract="",
            url="https://huggingface.co/papers/x2",
            listed_on=AS_OF,
        ),
        Item(
            id="x3",
            source="hf_papers",
            title="4090 上的视频扩散 — عربى — 🚀 émigré",
            abstract="Mixed scripts on an RTX 4090: 日本語のテキスト, עברית, and emoji 🎉.",
            url="https://huggingface.co/papers/x3",
            listed_on=AS_OF,
        ),
    ]
    return digest_for(items, ("4090",), notices=["hf_papers could not be reached for 2026-11-19 <b>&</b>."])


class _Reading(HTMLParser):
    """The events an HTML parser reads, character references decoded, runs of whitespace in text
    as one space (what a browser shows of them outside ``<pre>``). Attribute values and comments
    are kept exactly: a line break must never land in one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, ...]] = []
        self._text: list[str] = []

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._text))
        if text.strip():
            self.events.append(("text", text.strip()))
        self._text = []

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        self.events.append(("start", tag, *(f"{name}={value}" for name, value in attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._flush()
        self.events.append(("end", tag))

    def handle_comment(self, data: str) -> None:
        self._flush()
        self.events.append(("comment", data))

    def handle_decl(self, decl: str) -> None:
        self.events.append(("decl", decl))


def html_reading(html: str) -> list[tuple[str, ...]]:
    """What a reader of ``html`` gets, for telling whether two spellings are the same document."""
    reading = _Reading()
    reading.feed(html.replace("\r\n", "\n").replace("\r", "\n"))  # as a browser reads line ends
    reading.close()
    reading._flush()
    return reading.events
