"""The operator's library under the CLI: subscribe, export and import (digest.state.transfer), the
preview from the cycle's plan (digest.ops.preview), and the one stop-on-signal helper."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from digest.cycle.days import window_days
from digest.cycle.plan import plan_from_store
from digest.errors import ImportRefused, RuleError, SubscriberError
from digest.models import LAYOUTS, Subscriber
from digest.ops.preview import next_digest, render_preview
from digest.ops.signals import stop_on_signals
from digest.settings import Settings
from digest.state import transfer
from digest.state.store import Store
from tests.email_fixtures import AS_OF, sample_items

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
EARLIER = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def placed(email: str, **changes: object) -> Subscriber:
    """A subscriber with a place in the cycle: subscribed, served, caught up."""
    fields: dict[str, object] = {
        "rules": ("4090",),
        "name": "Ada",
        "subscribed_at": EARLIER,
        "last_delivery_at": EARLIER,
        "caught_up_to": date(2026, 1, 1),
        "layout": "compact",
        **changes,
    }
    return Subscriber(email, **fields)  # type: ignore[arg-type]


# -- import: every bad line named, all or nothing --------------------------------------------------


def test_every_bad_line_is_named_with_its_number_and_value() -> None:
    lines = [
        '{"email": "ada@example.org", "rules": ["4090"]}',
        "",
        "[1, 2]",
        '{"email": "b@example.org", "rules": "4090"}',
        '{"email": "c@example.org", "rules": ["x"], "name": 5}',
        '{"email": "d@example.org", "rules": ["x"], "layout": "wall"}',
        '{"email": "not an address", "rules": ["x"]}',
        '{"email": "ADA@example.org", "rules": ["gpu"]}',
        '{"email": "e@example.org", "rules": ["(video"]}',
        "{not json",
    ]
    with pytest.raises(ImportRefused) as refused:
        transfer.parse_export("\n".join(lines), "people.jsonl", NOW)
    problems = {problem.line: str(problem) for problem in refused.value.problems}
    assert sorted(problems) == [3, 4, 5, 6, 7, 8, 9, 10]  # line 2 is blank, line 1 is good
    assert problems[3] == "people.jsonl:3: expected a JSON object"
    assert problems[4] == 'people.jsonl:4: "rules" must be a list of strings'
    assert problems[5] == 'people.jsonl:5: "name" must be a string or null'
    assert problems[6] == 'people.jsonl:6: "layout" must be one of full, compact'
    assert problems[7].startswith("people.jsonl:7: 'not an address' is not a valid email address")
    assert problems[8] == "people.jsonl:8: ada@example.org is already on line 1"
    assert "(in '(video')" in problems[9]  # the rule as written, with the column of its problem
    assert str(refused.value) == "import refused: 8 bad line(s); nothing was imported"
    assert refused.value.exit_code == 2


def test_a_good_file_reads_as_new_subscribers_with_stripped_rules_and_full_by_default() -> None:
    text = '{"email": "Ada@Example.org", "rules": [" 4090 ", "video diffusion"], "name": "Ada"}\n'
    (person,) = transfer.parse_export(text, "people.jsonl", NOW)
    assert person == Subscriber(
        "ada@example.org", ("4090", "video diffusion"), "Ada", active=True, subscribed_at=NOW, layout="full"
    )


def test_an_import_keeps_the_place_of_people_already_there_and_takes_the_rest_from_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(placed("ada@example.org"))
    people = transfer.parse_export(
        '{"email": "ada@example.org", "rules": ["gpu"], "name": null, "layout": "full"}\n'
        '{"email": "bo@example.org", "rules": ["video"]}\n',
        "people.jsonl",
        NOW,
    )
    assert transfer.import_subscribers(store, people) == 2
    ada, bo = store.subscriber("ada@example.org"), store.subscriber("bo@example.org")
    assert ada == placed("ada@example.org", rules=("gpu",), name=None, layout="full")
    assert bo == Subscriber("bo@example.org", ("video",), None, subscribed_at=NOW)
    assert store.subscribers() == Store(tmp_path).subscribers()  # in the journal already


# -- subscribe: the same merge -----------------------------------------------------------------------


def test_subscribe_checks_the_address_and_the_rules_before_anything_is_stored() -> None:
    with pytest.raises(SubscriberError, match="'nobody' is not a valid email address"):
        transfer.check_request("nobody", ["4090"])
    with pytest.raises(RuleError) as bad:
        transfer.check_request("ada@example.org", ["4090", "title:(video"])
    assert bad.value.rule_number == 2 and bad.value.rule == "title:(video"
    request = transfer.check_request("Ada@Example.org", [" 4090 "])
    assert request == transfer.Request("ada@example.org", ("4090",), ())


def test_subscribe_keeps_a_place_and_a_name_or_layout_not_given(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(placed("ada@example.org", active=False))
    request = transfer.check_request("ada@example.org", ["gpu"])
    saved, existed = transfer.subscribe(store, request, None, None, NOW)
    assert existed and saved == placed("ada@example.org", rules=("gpu",))  # active again, same name and layout
    saved, _ = transfer.subscribe(store, request, "Ada L.", "full", NOW)
    assert saved == placed("ada@example.org", rules=("gpu",), name="Ada L.", layout="full")
    new, existed = transfer.subscribe(store, transfer.check_request("bo@example.org", ["x"]), None, None, NOW)
    assert not existed and new == Subscriber("bo@example.org", ("x",), subscribed_at=NOW, layout="full")
    assert store.subscriber("bo@example.org") == new


def test_merged_with_nobody_there_is_the_newcomer() -> None:
    newcomer = Subscriber("bo@example.org", ("x",), subscribed_at=NOW)
    assert transfer.merged(None, newcomer) is newcomer


# -- export → import round trip ----------------------------------------------------------------------

ADDRESSES = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: ".." not in s),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True).filter(lambda s: "--" not in s),  # IDNA's
    st.sampled_from(["org", "com", "de", "example"]),
)
RULES = st.lists(
    st.sampled_from(["4090", "video diffusion", "title:gaussian", '"real-time" -survey', "/[a-z]+net/", "gpu*"]),
    min_size=1,
    max_size=4,
    unique=True,
).filter(lambda rules: not all(rule.startswith("-") for rule in rules))
PEOPLE = st.lists(
    st.builds(
        Subscriber,
        email=ADDRESSES,
        rules=RULES.map(tuple),
        name=st.none() | st.text(max_size=30),
        layout=st.sampled_from(LAYOUTS),
    ),
    max_size=8,
    unique_by=lambda person: person.email,
)


@given(PEOPLE)
@example([Subscriber("ada@example.org", ("4090",), "Ada\u2028Lovelace\x85")])  # not line ends in JSON lines
def test_what_export_writes_import_reads_back_as_it_was(people: list[Subscriber]) -> None:
    text = transfer.export_lines(people)
    assert [json.loads(line)["email"] for line in text.split("\n")[:-1]] == sorted(p.email for p in people)
    back = transfer.parse_export(text, "export.jsonl", NOW)
    shown = [(p.email, p.rules, p.name, p.layout) for p in sorted(people, key=lambda p: p.email)]
    assert [(p.email, p.rules, p.name, p.layout) for p in back] == shown
    assert transfer.export_lines(back) == text


def test_an_export_holds_who_and_what_not_the_cycles_bookkeeping() -> None:
    line = transfer.export_lines([placed("ada@example.org")])
    assert json.loads(line) == {"email": "ada@example.org", "rules": ["4090"], "name": "Ada", "layout": "compact"}


# -- preview: the cycle's plan, not a dry cycle ------------------------------------------------------


def stocked(tmp_path: Path) -> Store:
    store = Store(tmp_path)
    store.upsert_items(sample_items(), NOW)
    store.save_subscribers(
        [
            Subscriber("ada@example.org", ("diffusion",), "Ada", subscribed_at=NOW),
            Subscriber("bo@example.org", ("diffusion",), subscribed_at=NOW, active=False),
        ]
    )
    return store


def test_the_preview_is_the_digest_the_cycle_plans_less_what_was_delivered(tmp_path: Path) -> None:
    store = stocked(tmp_path)
    lookback = 2
    preview = next_digest(store, "ada@example.org", AS_OF, lookback)
    (planned,) = plan_from_store(store, min(window_days(AS_OF, lookback)), AS_OF).digests
    assert preview == planned and len(preview.entries) > 1
    delivered = [entry.item for entry in preview.entries[:1]]
    store.record_note(store.delivery_note("ada@example.org", delivered, "d1"), NOW)
    again = next_digest(store, "ada@example.org", AS_OF, lookback)
    assert again is not None and [e.item for e in again.entries] == [e.item for e in preview.entries[1:]]
    assert next_digest(store, "bo@example.org", AS_OF, lookback) is None  # paused: the cycle skips them


def test_the_preview_is_rendered_as_the_cycle_renders_it(tmp_path: Path) -> None:
    store = stocked(tmp_path)
    digest = next_digest(store, "ada@example.org", AS_OF, 2)
    assert digest is not None
    settings = Settings(data_dir=tmp_path, public_url="https://digest.example.org", site_name="Paper Watch")
    html, message = render_preview(settings, digest)
    assert b"https://digest.example.org/manage?token=" in html and b"Paper Watch" in html
    assert message.to_address == "ada@example.org" and message.subject


# -- stopping on a signal ----------------------------------------------------------------------------


def test_a_signal_sets_the_stop_event_is_announced_once_and_the_old_handler_comes_back() -> None:
    heard: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(heard.append) as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
    assert heard == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before
