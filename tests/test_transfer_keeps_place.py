"""A person added again — from an import file or with ``digest subscribe`` — keeps what the cycle and
the feed know of them (digest.state.transfer.merged): without ``handled_at`` their rhythm would
fall back to the last delivery time (and could send a second digest on a day that had one), and
without ``feed_key`` and ``subscribed_at`` their feed address would change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from digest.clock import cron_trigger
from digest.cycle.rhythm import is_due
from digest.models import Subscriber
from digest.signing import Signer
from digest.state import transfer
from digest.state.store import Store

EARLIER = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
HANDLED = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)  # this morning's digest, at the person's own hour
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def placed() -> Subscriber:
    return Subscriber(
        "ada@example.org",
        ("4090",),
        subscribed_at=EARLIER,
        last_delivery_at=EARLIER,  # their last email; later digests found nothing new
        caught_up_to=date(2026, 12, 5),
        timezone="Europe/Berlin",
        hour=7,
        handled_at=HANDLED,
        feed_key="k-1",
    )


def test_an_import_keeps_handled_at_and_the_feed_address(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(placed())
    exported = transfer.export_lines([replace(placed(), rules=("gpu",))])  # as another store wrote it
    assert "handled_at" not in exported and "k-1" not in exported
    people = transfer.parse_export(exported, "people.jsonl", NOW)
    assert transfer.import_subscribers(store, people) == 1
    after = store.subscriber("ada@example.org")
    assert after is not None and after.rules == ("gpu",)
    assert after.handled_at == HANDLED and after.feed_key == "k-1" and after.subscribed_at == EARLIER
    signer = Signer("s")
    assert signer.feed_token(after) == signer.feed_token(placed()), "the same feed address"
    schedule = cron_trigger("0 7 * * *", "UTC")
    assert not is_due(after, NOW, schedule), "today's digest was had: none again today"
    assert is_due(replace(after, handled_at=None), NOW, schedule), "what was lost before"


def test_digest_subscribe_keeps_them_too(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_subscriber(placed())
    request = transfer.check_request("ada@example.org", ["title:gpu"])
    saved, existed = transfer.subscribe(store, request, None, None, NOW)
    assert existed and saved.rules == ("title:gpu",)
    assert saved.handled_at == HANDLED and saved.feed_key == "k-1"
    assert store.subscriber("ada@example.org") == saved
