"""A subscriber's own rhythm, format and size (issue 29): the checks of
:mod:`digest.state.preferences`, ``digest subscribe``'s options, export and import, and the cap on
papers per email in both parts of the rendered digest."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.errors import ImportRefused, SubscriberError
from digest.mail.render import Links, render_digest
from digest.models import LAYOUTS, WEEKDAYS, Digest, DigestEntry, Highlight, Item, RuleMatch, Subscriber
from digest.state import transfer
from digest.state.backend import open_backend
from digest.state.preferences import (
    MAX_PAPERS_LIMIT,
    Preferences,
    parse_hour,
    parse_max_papers,
    parse_rhythm,
    parse_timezone,
)
from digest.state.subscriptions import state_key
from tests.conftest import STORE_URL_VARIABLE, cli_env, on_postgresql, pass_store, pass_store_url, run_cli

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ADA = "ada@example.org"
LINKS = Links("https://d.example/digest/1?t=v", "https://d.example/manage?t=m", "https://d.example/unsubscribe?t=u")

# -- the pure checks --------------------------------------------------------------------------------


def test_text_is_read_into_choices_and_bad_values_are_named() -> None:
    chosen = Preferences().with_text(
        rhythm="weekly:FRI", hour="07:00", timezone="Europe/Berlin", max_papers="20", layout="compact", delivery="feed"
    )
    assert chosen == Preferences("weekly", 4, "Europe/Berlin", 7, "compact", 20, False)
    assert chosen.describe() == (
        "weekly on Friday at 07:00 (Europe/Berlin) · compact · at most 20 papers in full · feed only, no email"
    )
    assert parse_rhythm("sunday") == ("weekly", 6) and parse_rhythm("daily") == ("daily", None)
    assert parse_hour("default") is None and parse_timezone("") is None and parse_max_papers("none") is None
    refused = {
        "hour": ("99", "hour '99': use a whole hour from 0 to 23"),
        "rhythm": ("weekly:x", "rhythm 'x': use a day of the week: mon, tue"),
        "timezone": ("Mars/Olympus", "timezone 'Mars/Olympus': not a known time zone"),
        "max_papers": ("0", "max papers '0': use a number from 1 to 100"),
        "delivery": ("pigeon", "delivery 'pigeon': use email, or feed"),
        "layout": ("wall", "layout 'wall': use one of full, compact"),
    }
    for key, (value, message) in refused.items():
        with pytest.raises(SubscriberError) as caught:
            Preferences().with_text(**{key: value})
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "zone", ["x" * 10_000, "../../etc/passwd", "/etc/localtime", "Europe/../UTC", "zone.tab", "Europe/Berlin\n", ""]
)
def test_a_zone_is_a_known_iana_name_never_a_path_and_a_long_one_is_not_echoed(zone: str) -> None:
    if zone.strip() == "" or zone == "Europe/Berlin\n":  # blank: the service's; spaces around are dropped
        assert parse_timezone(zone) in (None, "Europe/Berlin")
        return
    with pytest.raises(SubscriberError) as caught:
        parse_timezone(zone)
    assert len(str(caught.value)) < 200


def test_a_stored_value_past_today_s_limits_still_opens() -> None:
    odd = Subscriber(ADA, ("x",), max_papers=500, timezone="Gone/Zone")
    assert Preferences.of(odd) == Preferences(max_papers=MAX_PAPERS_LIMIT)


def test_a_state_key_is_unchanged_for_the_defaults_and_changes_with_each_choice() -> None:
    person = Subscriber(ADA, ("4090",))
    keys = {state_key(person)}
    assert state_key(Preferences().applied(person)) == state_key(person), "old confirm links stay valid"
    for change in ({"hour": 7, "timezone": "UTC"}, {"frequency": "weekly"}, {"max_papers": 5}, {"by_email": False}):
        keys.add(state_key(replace(person, **change)))  # type: ignore[arg-type]
    assert len(keys) == 5


choices = st.builds(
    Preferences,
    frequency=st.sampled_from(("daily", "weekly")),
    weekday=st.integers(0, 6),
    timezone=st.one_of(st.none(), st.sampled_from(("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"))),
    hour=st.one_of(st.none(), st.integers(0, 23)),
    layout=st.sampled_from(LAYOUTS),
    max_papers=st.one_of(st.none(), st.integers(1, MAX_PAPERS_LIMIT)),
    by_email=st.booleans(),
)


@given(chosen=choices)
def test_choices_survive_a_subscriber_json_and_their_own_text(chosen: Preferences) -> None:
    person = chosen.applied(Subscriber(ADA, ("x",)))
    assert Preferences.of(Subscriber.from_record(person.to_record())) == chosen
    assert Preferences.read(json.loads(json.dumps(chosen.differences()))) == chosen
    typed = Preferences().with_text(
        rhythm="daily" if chosen.frequency == "daily" else f"weekly:{WEEKDAYS[chosen.weekday]}",
        hour="default" if chosen.hour is None else str(chosen.hour),
        timezone=chosen.timezone or "default",
        max_papers="none" if chosen.max_papers is None else str(chosen.max_papers),
        layout=chosen.layout,
        delivery="email" if chosen.by_email else "feed",
    )
    assert typed == (chosen if chosen.frequency == "weekly" else replace(chosen, weekday=0))


@given(text=st.text(max_size=80))
def test_any_text_is_a_choice_or_one_line_naming_it(text: str) -> None:
    for key in ("rhythm", "hour", "timezone", "max_papers", "layout", "delivery"):
        try:
            Preferences().with_text(**{key: text})
        except SubscriberError as exc:
            assert "\n" not in str(exc) or "\n" in text
            assert len(str(exc)) < 220


# -- export and import ------------------------------------------------------------------------------


def test_an_export_carries_the_choices_and_an_old_file_still_imports(tmp_path: Path) -> None:
    weekly = Preferences("weekly", 4, "Europe/Berlin", 7, "compact", 20, False).applied(Subscriber(ADA, ("4090",)))
    plain = Subscriber("bo@example.org", ("gpu",))
    text = transfer.export_lines([weekly, plain])
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {
        "email": ADA,
        "rules": ["4090"],
        "name": None,
        "layout": "compact",
        "frequency": "weekly",
        "weekday": 4,
        "timezone": "Europe/Berlin",
        "hour": 7,
        "max_papers": 20,
        "by_email": False,
    }
    assert lines[1] == {"email": "bo@example.org", "rules": ["gpu"], "name": None, "layout": "full"}
    back = transfer.parse_export(text, "x.jsonl", NOW)
    assert [Preferences.of(p) for p in back] == [Preferences.of(weekly), Preferences()]
    old = '{"email": "cy@example.org", "rules": ["tpu"], "name": "Cy"}\n'  # written before layouts and choices
    [cy] = transfer.parse_export(old, "old.jsonl", NOW)
    assert Preferences.of(cy) == Preferences() and cy.rules == ("tpu",)


def test_an_import_names_every_bad_choice() -> None:
    lines = [
        '{"email": "a@example.org", "rules": ["x"], "hour": 99}',
        '{"email": "b@example.org", "rules": ["x"], "timezone": "Mars/Olympus"}',
        '{"email": "c@example.org", "rules": ["x"], "weekday": "x"}',
        '{"email": "d@example.org", "rules": ["x"], "max_papers": 0}',
        '{"email": "e@example.org", "rules": ["x"], "by_email": "no"}',
        '{"email": "f@example.org", "rules": ["x"], "frequency": "hourly"}',
    ]
    with pytest.raises(ImportRefused) as caught:
        transfer.parse_export("\n".join(lines), "p.jsonl", NOW)
    said = [str(problem) for problem in caught.value.problems]
    assert [s.split(":")[1] for s in said] == ["1", "2", "3", "4", "5", "6"]
    assert "hour 99: use a whole hour from 0 to 23" in said[0] and "'Mars/Olympus'" in said[1]


# -- the command line ---------------------------------------------------------------------------------

README_LINES = [  # the README's example (operators' section), run as written
    "digest subscribe ada@example.org --weekly fri --hour 7 --timezone Europe/Berlin",
    "digest subscribe ada@example.org --max-papers 10 --layout compact",
    "digest subscribe ada@example.org --feed-only",
    "digest subscribe ada@example.org --email --daily --hour default",
]


def stored(data: Path, email: str = ADA, store_url: str | None = None) -> Subscriber:
    with open_backend(store_url or pass_store_url(), data, write=False) as store:
        person = store.subscriber(email)
    assert person is not None
    return person


def another_store(request: pytest.FixtureRequest) -> str:
    """A second, empty store of this pass (for a second data_dir): on PostgreSQL, a new database."""
    if on_postgresql(request.config):
        return str(request.getfixturevalue("postgres_server").new_database())
    return pass_store_url()


def test_the_readme_lines_set_and_change_one_persons_choices(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert run_cli("subscribe", ADA, "-k", "video diffusion", env=env).returncode == 0  # as the README's first lines
    seen, said = [], []
    for line in README_LINES:
        done = run_cli(*shlex.split(line)[1:], env=env)
        assert done.returncode == 0, done.stderr
        seen.append(Preferences.of(stored(tmp_path)))
        said.append(done.stdout)
    assert seen[0] == Preferences("weekly", 4, "Europe/Berlin", 7)
    assert "weekly on Friday at 07:00 (Europe/Berlin) · full · every paper in full · by email" in said[0]
    assert seen[1] == Preferences("weekly", 4, "Europe/Berlin", 7, "compact", 10)
    assert seen[2] == replace(seen[1], by_email=False)
    assert seen[3] == Preferences("daily", 4, "Europe/Berlin", None, "compact", 10, True)
    assert stored(tmp_path).rules == ("video diffusion",), "no -k: the rules stay"
    listed = run_cli("subscribers", env={**env, "COLUMNS": "200"})
    assert "daily · compact · max 10" in listed.stdout


def test_an_hour_alone_is_in_the_services_zone_and_a_pause_stays(tmp_path: Path) -> None:
    env = cli_env(tmp_path, DIGEST_SCHEDULE__TIMEZONE="America/Chicago")
    with pass_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("4090",), active=False, subscribed_at=NOW))
    assert "┃ delivery" not in run_cli("subscribers", env=env).stdout, "no column while everyone has the defaults"
    assert run_cli("subscribe", ADA, "--hour", "6", env=env).returncode == 0
    person = stored(tmp_path)
    assert (person.hour, person.timezone, person.active) == (6, "America/Chicago", False)
    assert "daily · 06h America/Chicago" in run_cli("subscribers", env={**env, "COLUMNS": "200"}).stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--hour", "99"], "--hour '99': use a whole hour from 0 to 23"),
        (["--weekly", "x"], "--weekly 'x': use a day of the week"),
        (["--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus': not a known time zone"),
        (["--max-papers", "1000"], "--max-papers '1000': use a number from 1 to 100"),
        (["--daily", "--weekly", "fri"], "--daily and --weekly: choose one"),
    ],
)
def test_a_bad_choice_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path, args: list[str], said: str) -> None:
    env = cli_env(tmp_path)
    assert run_cli("subscribe", ADA, "-k", "4090", env=env).returncode == 0
    done = run_cli("subscribe", ADA, *args, env=env)
    assert done.returncode == 2 and done.stderr.startswith(f"digest: error: {said}")
    assert len(done.stderr.strip().splitlines()) == 1
    assert Preferences.of(stored(tmp_path)) == Preferences(), "nothing changed"


def test_choices_for_someone_not_subscribed_need_rules(tmp_path: Path) -> None:
    done = run_cli("subscribe", ADA, "--hour", "7", env=cli_env(tmp_path))
    assert done.returncode == 2 and "not subscribed yet: give their rules with -k RULE" in done.stderr


def test_export_and_import_on_the_command_line_keep_the_choices(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = cli_env(tmp_path / "one")
    args = ["subscribe", ADA, "-k", "4090", "--weekly", "tue", "--max-papers", "5", "--feed-only"]
    assert run_cli(*args, env=env).returncode == 0
    assert run_cli("export", str(tmp_path / "people.jsonl"), env=env).returncode == 0
    two = another_store(request)  # an empty store: the import alone puts Ada there
    other = {**cli_env(tmp_path / "two"), STORE_URL_VARIABLE: two}
    assert run_cli("import", str(tmp_path / "people.jsonl"), env=other).returncode == 0
    assert Preferences.of(stored(tmp_path / "two", store_url=two)) == Preferences(
        "weekly", 1, max_papers=5, by_email=False
    )


# -- the cap in the email ---------------------------------------------------------------------------------


def paper(n: int) -> DigestEntry:
    item = Item(
        id=f"2611.{n:05d}",
        source="hf_papers",
        title=f"Paper {n} on 4090 kernels",
        abstract=f"Abstract {n} about 4090 GPUs.",
        url=f"https://hf.example/papers/2611.{n:05d}",
        listed_on=date(2026, 11, 20),
    )
    return DigestEntry(item, (RuleMatch("4090", (Highlight("title", 9, 13),)),))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_cap_shows_so_many_papers_and_lists_the_rest_by_title_in_both_parts(layout: str) -> None:
    entries = [paper(n) for n in range(12)]
    person = Subscriber(ADA, ("4090",), layout=layout, max_papers=5)
    rendered = render_digest(Digest(person, entries, date(2026, 11, 20), "d1"), LINKS)
    assert rendered.papers_in_full == 5
    assert rendered.subject.startswith("12 new papers")
    assert "7 more papers, by title" in rendered.html and "7 more papers, by title" in rendered.text
    for entry in entries:
        assert entry.item.url in rendered.html and entry.item.url in rendered.text
    assert rendered.text.count("Matched: ") == 5
    full_blocks = re.findall(r'id="paper-[^"]+"', rendered.html)
    assert len(full_blocks) == 5, full_blocks
    assert "See the full digest online" in rendered.html and LINKS.view_online in rendered.text
    uncapped = render_digest(Digest(replace(person, max_papers=None), entries, date(2026, 11, 20), "d2"), LINKS)
    assert uncapped.papers_in_full == 12 and "by title" not in uncapped.html
    under = render_digest(Digest(person, entries[:5], date(2026, 11, 20), "d3"), LINKS)
    assert under.papers_in_full == 5 and "by title" not in under.text
