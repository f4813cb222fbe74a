"""Rules written before ``-`` negated one word keep their meaning wherever they wait: in the store
file (the schema 4 migration), in journal lines not yet folded into it, and in confirm links
mailed before the upgrade."""

from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path

import httpx
import pytest

from digest.matching.syntax import RULE_SYNTAX, upgraded_rules
from digest.models import Subscriber
from digest.paths import JOURNAL_FILE, STORE_FILE
from digest.state.store import Store, open_store
from digest.state.subscriptions import state_key
from tests.test_web import ADA, client, clock, csrf_of, items, settings, signer, stored  # noqa: F401

OLD = "-survey 4090"  # under rule syntax 1: NOT "survey 4090"
OLD_MEANING = 'NOT "survey 4090"'


def v3_store(data_dir: Path, rules: list[str]) -> None:
    """A store file as digest wrote it at schema 3, with one subscriber."""
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {"email": ADA, "rules": rules, "active": True}
    document = {
        "meta": {"1": {"schema_version": 3, "prune_horizon": None}},
        "subscribers": {"1": record},
    }
    (data_dir / STORE_FILE).write_text(json.dumps(document), encoding="utf-8")


def journal_line(data_dir: Path, entry: dict[str, object]) -> None:
    with (data_dir / JOURNAL_FILE).open("a", encoding="utf-8") as journal:
        journal.write(json.dumps({**entry, "at": "2099-01-01T00:00:00+00:00"}) + "\n")


def person(rules: list[str]) -> dict[str, object]:
    return {"email": ADA, "rules": rules, "active": True}


def test_upgraded_rules_rewrite_only_what_the_old_syntax_read_otherwise() -> None:
    assert upgraded_rules([OLD, "4090", "-survey"], 1) == [OLD_MEANING, "4090", "-survey"]
    assert upgraded_rules([OLD], RULE_SYNTAX) == [OLD]


@pytest.mark.tinydb_only("the TinyDB journal's lines")
def test_a_journal_line_of_a_schema_3_store_keeps_its_old_meaning(tmp_path: Path) -> None:
    v3_store(tmp_path, ["4090"])
    journal_line(tmp_path, {"subscriber": person([OLD])})  # written by the digest of that file
    found = Store(tmp_path, writable=False).subscriber(ADA)
    assert found is not None and found.rules == (OLD_MEANING,)


@pytest.mark.tinydb_only("the TinyDB journal's lines")
def test_a_journal_line_marked_with_the_new_syntax_is_read_as_written(tmp_path: Path) -> None:
    v3_store(tmp_path, ["4090"])
    journal_line(tmp_path, {"subscribers": [person([OLD])], "syntax": RULE_SYNTAX})
    found = Store(tmp_path, writable=False).subscriber(ADA)
    assert found is not None and found.rules == (OLD,)


@pytest.mark.tinydb_only("the TinyDB journal's lines")
def test_an_unmarked_journal_line_of_a_current_store_is_read_as_written(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",)))
    journal_line(tmp_path, {"subscriber": person([OLD])})
    found = Store(tmp_path, writable=False).subscriber(ADA)
    assert found is not None and found.rules == (OLD,)


@pytest.mark.tinydb_only("the TinyDB journal's lines")
def test_the_journal_marks_each_change_with_the_rule_syntax(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(Subscriber(ADA, (OLD,)))
    lines = [json.loads(line) for line in (tmp_path / JOURNAL_FILE).read_text(encoding="utf-8").splitlines()]
    assert [line.get("syntax") for line in lines if "subscriber" in line] == [RULE_SYNTAX]
    store.close()


def confirm_with(client: httpx.Client, token: str) -> httpx.Response:  # noqa: F811
    page = client.get("/confirm", params={"token": token})
    hidden = re.search(r'<input type="hidden" name="token" value="([^"]+)"', page.text)
    assert hidden is not None, page.text
    return client.post("/confirm", data={"csrf": csrf_of(page.text), "token": htmllib.unescape(hidden.group(1))})


@pytest.mark.parametrize(
    ("mark", "expected"),
    [pytest.param({}, OLD_MEANING, id="mailed-before-the-upgrade"), pytest.param({"y": 2}, OLD, id="current")],
)
def test_a_confirm_link_keeps_the_meaning_of_the_rules_it_was_mailed_with(
    client: httpx.Client,  # noqa: F811
    settings: object,  # noqa: F811
    mark: dict[str, int],
    expected: str,
) -> None:
    token = signer().sign("confirm", ADA, r=["diffusion", OLD], s=state_key(None, None), l="full", **mark)
    answer = confirm_with(client, token)
    assert answer.status_code == 200 and "You are subscribed" in answer.text
    found = stored(settings, ADA)  # type: ignore[arg-type]
    assert found is not None and found.rules == ("diffusion", expected)


def test_the_sign_up_form_takes_an_exclusion_beside_a_rule_that_selects() -> None:
    """``diffusion`` and ``-survey`` on two lines: the README's subscriber-level exclusion, which the
    form refused when it checked each line as a list of its own."""
    from digest.state.subscriptions import check_rules

    assert check_rules("diffusion\n-survey").errors == ()
    assert check_rules("-survey\n-review").errors != ()
