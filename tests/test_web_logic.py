"""The pure parts of the web front: form checks, subscription state changes, rate limits, preview
snippets and CSRF tokens. Fast, no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.matching.rules import ItemIndex, parse_rules
from digest.models import Item, Subscriber
from digest.state.subscriptions import (
    check_email,
    check_rules,
    check_signup,
    confirmed,
    paused,
    resumed,
    rule_lines,
    state_key,
    with_rules,
)
from digest.web.preview import build_preview, snippet
from digest.web.ratelimit import RateLimit
from digest.web.security import FORM_TOKEN_SECONDS, form_token, form_token_ok

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def test_rule_lines_skip_blanks_and_repeats_and_keep_line_numbers() -> None:
    lines = rule_lines("\n 4090 \n\nvideo diffusion\n4090\n")
    assert [(r.line, r.text) for r in lines] == [(2, "4090"), (4, "video diffusion")]


def test_every_bad_rule_is_reported_with_its_line_and_column() -> None:
    check = check_rules("gpu\n%%%\nok\n" + "y" * 501)
    assert check.errors == (
        "Line 2, column 1: expected a word with at least one letter or digit here (in “%%%”)",
        f"Line 4, column 501: rule is longer than 500 characters (in “{'y' * 501}”)",
    )


@pytest.mark.parametrize(
    ("given_address", "normalized", "problem"),
    [
        ("Ada@Example.ORG ", "ada@example.org", None),
        ("", None, "Enter your email address."),
        ("ada@", None, "not a valid email address"),
        ("Ada <ada@example.org>", None, "not a valid email address"),
        ("a" * 250 + "@example.org", None, "at most 254 characters"),
    ],
)
def test_email_addresses(given_address: str, normalized: str | None, problem: str | None) -> None:
    address, error = check_email(given_address)
    assert address == normalized
    assert (error is None) if problem is None else (error is not None and problem in error)


def test_a_signup_is_ok_only_with_an_address_and_good_rules() -> None:
    assert check_signup("ada@example.org", "4090").ok
    assert not check_signup("ada@example.org", "").ok
    assert not check_signup("nope", "4090").ok


def test_confirming_a_new_address_starts_at_the_look_back_window() -> None:
    person = confirmed(None, "ada@example.org", ["4090"], NOW)
    assert person == Subscriber("ada@example.org", ("4090",), active=True, subscribed_at=NOW, caught_up_to=None)


def test_confirming_keeps_an_active_subscribers_place_and_restarts_a_paused_one() -> None:
    active = Subscriber("a@x.org", ("gpu",), subscribed_at=NOW, caught_up_to=date(2026, 11, 19))
    assert confirmed(active, "a@x.org", ["4090"], NOW) == Subscriber(
        "a@x.org", ("4090",), subscribed_at=NOW, caught_up_to=date(2026, 11, 19)
    )
    assert confirmed(paused(active), "a@x.org", ["4090"], NOW).caught_up_to is None


def test_pause_resume_and_edit_change_only_what_they_say() -> None:
    person = Subscriber("a@x.org", ("gpu",), name="A", subscribed_at=NOW, caught_up_to=date(2026, 11, 19))
    assert paused(person) == Subscriber("a@x.org", ("gpu",), "A", False, NOW, None, date(2026, 11, 19))
    assert resumed(paused(person)) == Subscriber("a@x.org", ("gpu",), "A", True, NOW, None, None)
    assert resumed(person) == person, "resuming an active subscriber keeps their place"
    assert with_rules(person, ["4090"]).rules == ("4090",)


def test_state_key_changes_with_every_change_a_confirm_link_could_undo() -> None:
    person = Subscriber("a@x.org", ("gpu",))
    keys = {state_key(None), state_key(person), state_key(paused(person)), state_key(with_rules(person, ["4090"]))}
    assert len(keys) == 4
    assert state_key(person) == state_key(Subscriber("a@x.org", ("gpu",), caught_up_to=date(2026, 1, 1)))


def test_rate_limit_window_slides() -> None:
    limit = RateLimit(2, 60)
    assert limit.allow("k", 0) and limit.allow("k", 10)
    assert not limit.allow("k", 59)
    assert limit.allow("k", 60.5), "the first hit has left the window"
    assert limit.allow("other", 59), "keys are independent"


def test_rate_limit_forget_and_snapshot_round_trip() -> None:
    limit = RateLimit(1, 100)
    assert limit.allow("k", 5)
    limit.forget_last("k")
    assert limit.allow("k", 6)
    again = RateLimit(1, 100)
    again.restore(limit.snapshot(50), 50)
    assert not again.allow("k", 50) and again.allow("k", 106.5)
    again.restore({"bad": "data", 3: [1]}, 50)  # malformed snapshots are ignored, never fatal
    again.restore("nonsense", 50)


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=60), st.integers(1, 5))
def test_rate_limit_never_allows_more_than_its_limit_in_any_window(times: list[float], cap: int) -> None:
    limit = RateLimit(cap, 10)
    allowed = [t for t in sorted(times) if limit.allow("k", t)]
    for t in allowed:
        assert len([u for u in allowed if t - 10 < u <= t]) <= cap


def test_snippet_centers_on_the_first_match_and_escapes() -> None:
    text = "<b>" + "word " * 60 + "video diffusion" + " tail" * 60
    start = text.index("video")
    html = str(snippet(text, [(start, start + len("video diffusion"))], reach=40))
    assert html.startswith("… ") and html.endswith(" …")
    assert "<mark>video diffusion</mark>" in html and "<b>" not in html
    assert snippet(text, []) is None


def test_preview_ranks_title_matches_first_and_skips_withdrawn_papers() -> None:
    def item(n: int, title: str, abstract: str = "", withdrawn: bool = False) -> Item:
        return Item(
            f"2611.0000{n}", "hf_papers", title, abstract, f"https://e/{n}", date(2026, 11, 20), withdrawn=withdrawn
        )

    index = ItemIndex([item(1, "Other", "uses a GPU"), item(2, "GPUs for all"), item(3, "GPU", withdrawn=True)])
    preview = build_preview(index, parse_rules(["gpu"]))
    assert [e.url for e in preview.entries] == ["https://e/2", "https://e/1"]
    assert str(preview.entries[0].title_html) == "<mark>GPUs</mark> for all"
    assert preview.matched == 2 and preview.considered == 3


def test_form_tokens_fit_only_their_key_and_expire_after_a_day() -> None:
    now = NOW.timestamp()
    token = form_token("key", now)
    assert form_token_ok("key", token, now) and form_token_ok("key", token, now + FORM_TOKEN_SECONDS)
    assert not form_token_ok("key", token, now + FORM_TOKEN_SECONDS + 1)
    assert not form_token_ok("other-key", token, now)
    assert not form_token_ok("key", token[:-1] + ("0" if token[-1] != "0" else "1"), now)
    assert not form_token_ok("key", "", now) and not form_token_ok("key", None, now)
