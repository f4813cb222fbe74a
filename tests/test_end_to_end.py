"""``digest run`` as a subprocess against a real local Daily Papers API and a real SMTP server."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, run_cli
from tests.servers import FakeHfApi, SmtpSink

DAY1, DAY2, DAY3 = "2026-11-19", "2026-11-20", "2026-11-21"
PAPER_LINK = re.compile(r"/papers/([0-9]{4}\.[0-9]{5})")

# Independent of digest's own tokenizer: the expected matches, written as plain regexes.
EXPECTED = {
    "alice@example.org": ("4090", re.compile(r"(?<![0-9])4090(?![0-9])")),
    "bob@example.org": ("video diffusion", re.compile(r"(?<![a-z])video[^a-z0-9]+diffusions?(?![a-z])", re.I)),
    "carol@example.org": ("Gaussian Splatting", re.compile(r"(?<![a-z])gaussian[^a-z0-9]+splatting(?![a-z])", re.I)),
    "dave@example.org": ("fusion", re.compile(r"(?<![a-z])fusions?(?![a-z])", re.I)),
}


def third_day(days: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Day 3: two brand-new papers (one with markup in its title) and one re-listed from day 2."""
    hostile = copy.deepcopy(days[DAY1][0])
    hostile["paper"]["id"] = "2611.99001"
    hostile["paper"]["title"] = "<script>alert('x')</script> RTX 4090 & Video-Diffusion at 60 FPS"
    hostile["title"] = hostile["paper"]["title"]
    plain = copy.deepcopy(days[DAY1][1])
    plain["paper"]["id"] = "2611.99002"
    plain["paper"]["title"] = "Gaussian splatting on one 4090D card"
    plain["paper"]["summary"] = "We render Gaussian splats in real time."
    return [hostile, plain, copy.deepcopy(days[DAY2][0])]


def expected_ids(days: dict[str, list[dict[str, Any]]], dates: list[str], pattern: re.Pattern[str]) -> set[str]:
    found = set()
    for day in dates:
        for entry in days[day]:
            text = entry["paper"]["title"] + " " + " ".join(entry["paper"]["summary"].split())
            if pattern.search(text):
                found.add(entry["paper"]["id"])
    return found


def ids_in(sink: SmtpSink, address: str) -> list[str]:
    ids: list[str] = []
    for message in sink.to(address):
        text = message.get_body(preferencelist=("plain",)).get_content()
        ids.extend(dict.fromkeys(PAPER_LINK.findall(text)))
    return ids


@pytest.fixture
def world(hf_api: FakeHfApi, smtp: SmtpSink, tmp_path: Path) -> dict[str, Any]:
    hf_api.days[DAY3] = third_day(hf_api.days)
    env = cli_env(tmp_path / "data", hf_api, smtp)
    for address, (rule, _) in EXPECTED.items():
        result = run_cli("subscribe", address, "-k", rule, env=env)
        assert result.returncode == 0, result.stderr
    return {"env": env, "api": hf_api, "smtp": smtp}


def test_daily_cycle_keeps_every_delivery_promise(world: dict[str, Any]) -> None:
    env, api, smtp = world["env"], world["api"], world["smtp"]

    first = run_cli("run", "--date", DAY2, env=env)
    assert first.returncode == 0, first.stderr
    assert "sent 4" in first.stdout or "sent 3" in first.stdout
    # The busy day (64 papers) needed a second page of 50.
    assert any(r.query.get("date") == DAY2 and r.query.get("p") == "1" for r in api.requests)

    for address, (_, pattern) in EXPECTED.items():
        want = expected_ids(api.days, [DAY1, DAY2], pattern)
        got = ids_in(smtp, address)
        assert sorted(got) == sorted(want), address
        assert len(got) == len(set(got)), f"{address} got a paper twice"
        assert len(smtp.to(address)) == (1 if want else 0)
    assert not ids_in(smtp, "dave@example.org") or all(
        "fusion" in m.get_body(preferencelist=("plain",)).get_content().lower() for m in smtp.to("dave@example.org")
    )

    sent_after_first = len(smtp.messages)
    again = run_cli("run", "--date", DAY2, env=env)
    assert again.returncode == 0, again.stderr
    assert "sent 0" in again.stdout
    assert len(smtp.messages) == sent_after_first

    nxt = run_cli("run", "--date", DAY3, env=env)
    assert nxt.returncode == 0, nxt.stderr
    new_messages = smtp.messages[sent_after_first:]
    assert {m["To"].addresses[0].addr_spec for m in new_messages} == {
        "alice@example.org",
        "bob@example.org",
        "carol@example.org",
    }
    for address, (_, pattern) in EXPECTED.items():
        every = ids_in(smtp, address)
        assert len(every) == len(set(every)), f"{address} got a paper twice"
        assert set(every) == expected_ids(api.days, [DAY1, DAY2, DAY3], pattern)

    hostile = next(m for m in new_messages if m["To"].addresses[0].addr_spec == "alice@example.org")
    html = hostile.get_body(preferencelist=("html",)).get_content()
    text = hostile.get_body(preferencelist=("plain",)).get_content()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<script>alert('x')</script> RTX 4090" in text  # the text part is plain text, shown as is
    assert hostile.get_content_type() == "multipart/alternative"
    assert hostile["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert hostile["List-Unsubscribe"].startswith("<https://digest.example.org/unsubscribe?token=")
    assert "4090" in hostile["Subject"] and "paper" in hostile["Subject"]
    assert hostile["Message-ID"].endswith("@digest.example.org>")


def test_new_subscriber_first_digest_covers_the_window(world: dict[str, Any]) -> None:
    env, api, smtp = world["env"], world["api"], world["smtp"]
    assert run_cli("run", "--date", DAY2, env=env).returncode == 0
    late = run_cli("subscribe", "erin@example.org", "-k", "4090", env=env)
    assert late.returncode == 0, late.stderr
    again = run_cli("run", "--date", DAY2, env=env)
    assert again.returncode == 0, again.stderr
    assert "sent 1" in again.stdout
    want = expected_ids(api.days, [DAY1, DAY2], EXPECTED["alice@example.org"][1])
    assert sorted(ids_in(smtp, "erin@example.org")) == sorted(want)


def test_dry_run_sends_and_records_nothing(world: dict[str, Any]) -> None:
    env, smtp = world["env"], world["smtp"]
    dry = run_cli("run", "--date", DAY2, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "matched" in dry.stdout
    assert smtp.messages == []
    real = run_cli("run", "--date", DAY2, env=env)
    assert "sent 4" in real.stdout or "sent 3" in real.stdout
    unique = {e["paper"]["id"] for day in (DAY1, DAY2) for e in world["api"].days[day]}
    assert f"new {len(unique)}," in real.stdout  # the dry run recorded no item as seen


def test_api_down_loses_nothing(world: dict[str, Any]) -> None:
    env, api, smtp = world["env"], world["api"], world["smtp"]
    api.down = True
    down = run_cli("run", "--date", DAY2, env=env)
    assert down.returncode == 1
    assert "source down: hf_papers" in down.stdout
    assert "HTTP 503" in down.stderr
    assert smtp.messages == []
    api.down = False
    up = run_cli("run", "--date", DAY2, env=env)
    assert up.returncode == 0, up.stderr
    want = expected_ids(api.days, [DAY1, DAY2], EXPECTED["bob@example.org"][1])
    assert sorted(ids_in(smtp, "bob@example.org")) == sorted(want)


def test_smtp_refusing_one_recipient_does_not_stop_the_others(world: dict[str, Any]) -> None:
    env, smtp = world["env"], world["smtp"]
    smtp.refuse_rcpt_for["bob@example.org"] = "550 5.1.1 mailbox unavailable"
    first = run_cli("run", "--date", DAY2, env=env)
    assert first.returncode == 1
    assert "550" in first.stderr
    assert smtp.to("bob@example.org") == []
    assert smtp.to("alice@example.org") and smtp.to("carol@example.org")
    smtp.refuse_rcpt_for.clear()
    retry = run_cli("run", "--date", DAY2, env=env)
    assert retry.returncode == 0, retry.stderr
    assert "sent 1" in retry.stdout
    assert len(smtp.to("bob@example.org")) == 1
    assert len(smtp.to("alice@example.org")) == 1
