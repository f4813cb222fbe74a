"""The README's "Keyword rules" tables and the rule-case table must tell the same story.

Each table row names rules (in backticks; several for one subscriber's list) and, in quotes, texts
that match or do not. Every such (rules, text, verdict) must be a case in
``tests/data/rule_cases.yaml``, which ``test_rules.py`` runs; every error row must be what the
parser says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from digest.errors import RuleError
from digest.matching.rules import parse_rules
from tests.test_rules import CASES, case_rules

README = Path(__file__).resolve().parent.parent / "README.md"
CODE = re.compile(r"`([^`]+)`")
QUOTED = re.compile(r'"([^"]+)"')


def rules_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Keyword rules")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_rows() -> list[dict[str, str]]:
    """Every data row of every table in the section, as {header: cell}."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in rules_section().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-: "):
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def case_texts(case: dict[str, Any]) -> list[str]:
    texts = [case.get("title", ""), case.get("abstract", ""), case.get("org") or "", case.get("source", "")]
    return [*texts, *case.get("authors", ()), *case.get("keywords", ()), *case.get("categories", ())]


ROWS = table_rows()


def test_the_section_has_the_tables() -> None:
    assert len(ROWS) >= 25
    assert sum("error" in row for row in ROWS) >= 5


@pytest.mark.parametrize("row", ROWS, ids=[row["rule"] for row in ROWS])
def test_every_readme_example_is_a_rule_case(row: dict[str, str]) -> None:
    rules = CODE.findall(row["rule"])
    assert rules, row
    same = [c for c in CASES if case_rules(c) == rules]
    assert same, f"no case in rule_cases.yaml for {rules}"
    if "error" in row:
        expected = CODE.findall(row["error"])[0]
        assert any(expected in c.get("error", "") or c.get("error", "") in expected for c in same)
        with pytest.raises(RuleError) as caught:
            parse_rules(rules)
        assert expected in str(caught.value)
        return
    for column, verdict in (("matches", True), ("does not match", False)):
        for text in QUOTED.findall(row[column]):
            text = text.replace("⏎", "\n")
            assert any(c.get("match") is verdict and any(text in t for t in case_texts(c)) for c in same), (
                f"README says {rules} {'matches' if verdict else 'does not match'} {text!r}; no such case"
            )
