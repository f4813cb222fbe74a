"""Build ``digest/data/sample.json`` from the saved listing pages in ``../shared/seeds``.

The sample is what ``digest demo`` uses when Hugging Face cannot be reached, and what the tests'
stand-in API serves. It keeps the real titles, abstracts, organizations, dates and upvotes; the
seeds carry no arXiv ids or author names, so ids (``2611.9xxxx``) and author names (``Author 1``…)
are made up, and the file says so (``"ids_made_up": true``: the demo then links each paper to a
search for its title, see ``digest/sources/sample.py``). Each sample day is in the exact JSON shape
of ``/api/daily_papers``.

    python scripts/build_sample.py [SEEDS_DIR]
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import sys
from datetime import date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
OUT = ROOT / "digest" / "data" / "sample.json"
DAYS = (date(2026, 11, 19), date(2026, 11, 20))
MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}


def parse_seed(text: str) -> list[dict[str, object]]:
    """Papers from a saved page: a title block, an abstract block, then ``who / · / date [upvotes]``."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", text)]
    papers = []
    for k in range(2, len(blocks)):
        lines = [line.strip() for line in blocks[k].splitlines()]
        if "·" not in lines:
            continue
        dot = lines.index("·")
        who, when = " ".join(lines[:dot]), " ".join(lines[dot + 1 :])
        match = re.match(r"([A-Z][a-z]{2}) (\d{1,2})(?:, (\d{4}))?(?: (\d+))?$", when)
        if not match:
            continue
        month, day, year, upvotes = match.groups()
        authors_match = re.match(r"•\s*(\d+) authors?", who)
        papers.append(
            {
                "title": blocks[k - 2].strip(),
                "abstract": blocks[k - 1].strip(),
                "authors": int(authors_match.group(1)) if authors_match else 3,
                "organization": None if authors_match else who,
                "published": date(int(year or 2026), MONTHS[month], int(day)),
                "upvotes": int(upvotes or 0),
            }
        )
    return papers


_IDS: dict[str, str] = {}


def made_up_id(title: str) -> str:
    """A stable fake arXiv id per title; the same paper on two pages gets the same id."""
    if title not in _IDS:
        number = int(hashlib.sha256(title.encode()).hexdigest(), 16) % 100000
        while f"2611.{number:05d}" in _IDS.values():
            number = (number + 1) % 100000
        _IDS[title] = f"2611.{number:05d}"
    return _IDS[title]


def api_entry(paper: dict[str, object], listed: date) -> dict[str, object]:
    title = str(paper["title"])
    paper_id = made_up_id(title)
    published = datetime.combine(paper["published"], datetime.min.time()).isoformat() + ".000Z"  # type: ignore[arg-type]
    organization = paper["organization"]
    # Hard line breaks in the summary, as the real API has them.
    summary = re.sub(r"(.{60,80}?) ", lambda m: m.group(1) + "\n", str(paper["abstract"]))
    return {
        "paper": {
            "id": paper_id,
            "authors": [{"name": f"Author {n}", "hidden": False} for n in range(1, int(paper["authors"]) + 1)],  # type: ignore[call-overload]
            "publishedAt": published,
            "submittedOnDailyAt": f"{listed.isoformat()}T08:00:00.000Z",
            "title": title,
            "summary": summary,
            "upvotes": paper["upvotes"],
            "discussionId": hashlib.md5(title.encode()).hexdigest()[:24],
            "ai_keywords": [],
            "githubRepo": None,
            "organization": {
                "name": str(organization).split(" ", 1)[0],
                "fullname": (str(organization).split(" ", 1)[1:] or [organization])[0],
            }
            if organization
            else None,
        },
        "publishedAt": published,
        "title": title,
        "thumbnail": f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{paper_id}.png",
        "numComments": int(paper["upvotes"]) // 3,  # type: ignore[call-overload]
        "isAuthorParticipating": False,
    }


def main() -> None:
    seeds = Path(sys.argv[1]) if len(sys.argv) > 1 else SEEDS
    files = sorted(seeds.glob("*.txt"))
    first = parse_seed(files[0].read_text(encoding="utf-8"))
    second = parse_seed(files[1].read_text(encoding="utf-8"))
    # Day 2 re-lists three papers of day 1, as the real list sometimes does: they are one item each.
    days = {
        DAYS[0].isoformat(): [api_entry(p, DAYS[0]) for p in first],
        DAYS[1].isoformat(): [api_entry(p, DAYS[1]) for p in second + first[:3]],
    }
    sample = {"ids_made_up": True, "days": days}
    OUT.write_text(json.dumps(sample, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} with {', '.join(f'{d}: {len(v)} papers' for d, v in days.items())}")


if __name__ == "__main__":
    main()
