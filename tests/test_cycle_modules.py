"""The cycle as modules with one job each (issue 24): what crosses between them, end to end.

- A digest that fails to render is a failure for that subscriber alone: the others get theirs over
  a real SMTP server, nothing is marked delivered for them, and the next cycle sends it.
- What a source noticed but could still use (``FetchResult.warnings``) reaches the cycle's report,
  its record, and ``digest run``'s standard error.
- The cycle's steps take a small :class:`CycleConfig`, built once from the settings in ``run.py``.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

import digest.cycle.compose
import digest.cycle.render_ahead
from digest.cycle.config import CycleConfig
from digest.cycle.plan import plan_digests
from digest.cycle.run import cycle_config, run_once
from digest.mail.render import Links, RenderedDigest, render_digest
from digest.models import Digest, Subscriber
from digest.settings import Settings, load_settings
from digest.sources import FetchResult
from digest.sources.sample import SampleSource
from digest.state.backend import open_backend
from tests.conftest import cli_env, run_cli
from tests.email_fixtures import AS_OF, sample_items
from tests.servers import FakeHfApi, SmtpSink

DAY = date(2026, 11, 20)  # the sample's last day
PEOPLE = ["first@example.org", "second@example.org", "third@example.org"]
CYCLE = Path(__file__).resolve().parent.parent / "digest" / "cycle"


def sink_settings(tmp_path: Path, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGEST_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("DIGEST_SMTP__PORT", str(smtp.port))
    monkeypatch.setenv("DIGEST_SMTP__SECURITY", "none")
    return load_settings()


def recipients(smtp: SmtpSink) -> list[str]:
    return sorted(to[0] for _, to in smtp.envelopes)


@pytest.mark.parametrize("where", ["render process", "in process"])
def test_a_digest_that_fails_to_render_fails_for_that_subscriber_alone(
    tmp_path: Path, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    settings = sink_settings(tmp_path, smtp, monkeypatch)
    with monkeypatch.context() as broken:  # undone below; the settings (and the pass's store) stay
        if where == "in process":
            broken.setattr(digest.cycle.render_ahead, "can_fork", lambda: False)
        with open_backend(settings.store.url, settings.data_dir) as store:
            for email in PEOPLE:
                store.save_subscriber(Subscriber(email, ("video diffusion",)))

        def render_or_raise(digest: Digest, links: Links, **options: Any) -> RenderedDigest:
            if digest.subscriber.email == PEOPLE[1]:
                raise ValueError("a template choked on this paper")
            return render_digest(digest, links, **options)

        broken.setattr(digest.cycle.compose, "render_digest", render_or_raise)
        report = run_once(settings, DAY, sources=[SampleSource()])

        assert recipients(smtp) == [PEOPLE[0], PEOPLE[2]]
        assert (report.sent, report.failed, report.refused) == (2, 1, 0)
        assert not report.ok
        [line] = [e for e in report.errors if PEOPLE[1] in e]
        assert "a template choked on this paper" in line and "tried again next cycle" in line
        assert any(PEOPLE[1] in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            assert store.delivered_ids(PEOPLE[1]) == set()
            assert store.delivered_ids(PEOPLE[0]) and store.delivered_ids(PEOPLE[2])
            [failure] = store.failures()
        assert failure["email"] == PEOPLE[1] and not failure.get("permanent")

    # the template is fixed; the next day's cycle
    smtp.envelopes.clear()
    smtp.messages.clear()
    again = run_once(settings, date(2026, 11, 21), sources=[SampleSource()])
    assert recipients(smtp) == [PEOPLE[1]]
    assert (again.sent, again.failed) == (1, 0)
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        assert store.delivered_ids(PEOPLE[1]) == store.delivered_ids(PEOPLE[0])
        assert store.failures() == []


class NoticingSource:
    """A source that fetched fine but noticed entries it had to skip."""

    name = "noticing"

    def fetch(self, client: httpx.Client, days: Sequence[date]) -> FetchResult:
        return FetchResult(warnings=["feed noticing (https://feed.example.org/rss): entry 2 has no id; skipped"])


def test_a_sources_warnings_reach_the_cycle_report_and_its_record(
    tmp_path: Path, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sink_settings(tmp_path, smtp, monkeypatch)
    report = run_once(settings, DAY, sources=[NoticingSource()])
    warning = "feed noticing (https://feed.example.org/rss): entry 2 has no id; skipped"
    assert warning in report.errors
    assert all(source.ok for source in report.sources)  # noticed, not failed: the exit status stays 0
    with open_backend(settings.store.url, settings.data_dir, write=False) as store:
        assert warning in store.cycles(last=1)[-1]["errors"]


def test_digest_run_prints_a_sources_warnings(tmp_path: Path, hf_api: FakeHfApi, smtp: SmtpSink) -> None:
    hf_api.days[DAY.isoformat()].append({"paper": {"title": "a paper without an id"}})
    env = cli_env(tmp_path / "data", hf_api, smtp)
    assert run_cli("subscribe", "a@example.org", "-k", "video diffusion", env=env).returncode == 0
    done = run_cli("run", "--date", DAY.isoformat(), env=env)
    assert done.returncode == 0, done.stderr  # the day was read: a skipped entry fails nothing
    notes = [line for line in done.stderr.splitlines() if line.startswith("digest: ")]
    assert len(notes) == 1 and notes[0].startswith(f"digest: {DAY.isoformat()} entry "), done.stderr
    assert notes[0].endswith(": skipped malformed paper (paper.id is missing)")


def test_the_cycle_config_holds_what_the_steps_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGEST_LOOKBACK_DAYS", "3")
    monkeypatch.setenv("DIGEST_HTTP__TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("DIGEST_SITE_NAME", "Lab papers")
    config = cycle_config(load_settings())
    assert (config.lookback_days, config.http_timeout_seconds) == (3, 7.0)
    assert config.sender_name == "Lab papers"  # no sender_name: the site's
    assert config.secret_key and config.secret_key not in repr(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lookback_days = 5  # type: ignore[misc]
    assert isinstance(config, CycleConfig)


def test_only_run_py_reads_the_settings() -> None:
    """Below ``run.py`` a cycle's modules take :class:`CycleConfig`, never the whole Settings."""
    readers = []
    for path in sorted(CYCLE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "digest.settings":
                readers.append(path.name)
    assert readers == ["run.py"]


def test_no_function_of_the_cycle_is_over_fifty_lines() -> None:
    long = []
    for path in sorted(CYCLE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and (node.end_lineno or node.lineno) - node.lineno + 1 > 50:
                long.append(f"{path.name}:{node.name}")
    assert long == []


def test_a_paper_one_rule_matched_is_one_entry_for_everyone_with_that_rule() -> None:
    """Planning shares entries by (paper, rule), also between spellings of the rule that differ only
    in the spaces around it; a paper two rules matched gets an entry with both."""
    items = sample_items()
    first_day = min(item.listed_on for item in items)
    people = [
        Subscriber("a@example.org", ("video diffusion",)),
        Subscriber("b@example.org", ("  video diffusion ",)),
        Subscriber("c@example.org", ("video diffusion", "diffusion")),
    ]
    plan = plan_digests(people, items, lambda email, since: set(), first_day, first_day, AS_OF)
    a, b, c = (d.entries for d in plan.digests)
    assert a and all(x is y for x, y in zip(a, b, strict=True))
    both = [e for e in c if len(e.matches) == 2]
    assert both and {m.rule for m in both[0].matches} == {"video diffusion", "diffusion"}
    assert not any(e is f for e in both for f in a)
