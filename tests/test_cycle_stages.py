"""A cycle reports where its time went, and keeps its archive within the retention."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest

from digest.cycle.archive import prune_archive
from digest.cycle.render_ahead import can_fork
from digest.cycle.run import run_once
from digest.models import Subscriber
from digest.settings import load_settings
from digest.sources.sample import SampleSource
from digest.state.backend import open_backend
from tests.servers import SmtpSink


def test_stages_and_peak_memory_are_recorded(tmp_path: Path, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGEST_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("DIGEST_SMTP__PORT", str(smtp.port))
    monkeypatch.setenv("DIGEST_SMTP__SECURITY", "none")
    settings = load_settings()

    with open_backend(settings.store.url, settings.data_dir) as store:
        store.save_subscriber(Subscriber("a@example.org", ("video diffusion",)))
    report = run_once(settings, date(2026, 11, 20), sources=[SampleSource()])
    assert report.sent == 1 and len(smtp.messages) == 1
    assert set(report.stages) == {"fetch", "match", "render", "send", "record", "finish"}
    assert all(seconds >= 0 for seconds in report.stages.values())
    assert all(mb > 10 for mb in report.peak_mb.values())  # a Python process with digest loaded
    record = report.to_record()
    assert set(record["stages"]) == set(report.stages)


def test_old_archived_digests_are_pruned(tmp_path: Path) -> None:
    old, new = tmp_path / "old.html", tmp_path / "new.html"
    old.write_text("x")
    new.write_text("y")
    horizon = date(2026, 11, 1)
    stamp = (horizon - timedelta(days=3)).strftime("%s")
    os.utime(old, (int(stamp), int(stamp)))
    assert prune_archive(tmp_path, horizon) == 1
    assert not old.exists() and new.exists()


@pytest.mark.skipif(not can_fork(), reason="the render process needs fork (Linux)")
def test_digests_are_rendered_in_a_child_process_and_all_arrive(
    tmp_path: Path, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGEST_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("DIGEST_SMTP__PORT", str(smtp.port))
    monkeypatch.setenv("DIGEST_SMTP__SECURITY", "none")
    settings = load_settings()
    people = [f"reader{n}@example.org" for n in range(6)]
    with open_backend(settings.store.url, settings.data_dir) as store:
        for email in people:
            store.save_subscriber(Subscriber(email, ("video diffusion", "diffusion")))
    report = run_once(settings, date(2026, 11, 20), sources=[SampleSource()])
    assert report.sent == 6 and report.failed == 0
    assert report.peak_mb["render_process"] > 0  # the child did the rendering and said what it held
    assert sorted(recipients[0] for _, recipients in smtp.envelopes) == people
    # Each email is whole and links the archived page the child wrote for it.
    archived = {path.stem for path in (settings.data_dir / "archive").glob("*.html")}
    assert len(archived) == 6
    for message in smtp.messages:
        html = message.get_body(("html",))
        assert html is not None and "video diffusion" in html.get_content().lower()
        assert sum(digest_id in html.get_content() for digest_id in archived) == 1
