"""``digest demo``: one throw-away subscriber and one real cycle into ``data_dir/demo``, with no setup.

It must work on a first try anywhere, so when Hugging Face cannot be reached (no network, a proxy,
a container without DNS) it runs on the bundled sample of real listings instead, and says why.
The cycle writes ``.eml`` files (no SMTP server needed); the HTML part is saved beside the newest
one for a browser.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

from digest.clock import today_in, utc_now
from digest.cycle.run import run_once
from digest.mail.mailer import OutboxMailer
from digest.models import CycleReport, Subscriber
from digest.paths import DEMO_DIR, OUTBOX_DIR
from digest.settings import TINYDB_STORE, Settings
from digest.sources import Source, make_client
from digest.sources.hf_papers import HfPapersSource
from digest.sources.sample import SampleSource, sample_last_day
from digest.state.store import open_store

DEMO_RULES = ("4090", "video diffusion", "gaussian splatting", "real-time")
DEMO_EMAIL = "demo@example.com"


@dataclass(frozen=True, slots=True)
class DemoDay:
    """The day the demo runs as of, its sources (None: the configured ones), and why the sample
    is used (None: the live feed answered)."""

    as_of: date
    sources: list[Source] | None
    unreachable: str | None = None


def choose_day(settings: Settings) -> DemoDay:
    """Today on the live feed if it answers for today; else the sample's last day."""
    as_of = today_in(settings.schedule.timezone)
    with make_client(timeout=10) as client:
        try:
            HfPapersSource(settings.sources.hf_papers).fetch_day(client, as_of)
        except Exception as exc:  # any failure at all means: use the sample
            return DemoDay(sample_last_day(), [SampleSource()], str(exc) or type(exc).__name__)
    return DemoDay(as_of, None)


def run_demo(settings: Settings, day: DemoDay) -> tuple[CycleReport, list[Path]]:
    """A fresh ``data_dir/demo`` with the demo subscriber, one cycle, and the emails it wrote."""
    demo_dir = settings.data_dir / DEMO_DIR
    shutil.rmtree(demo_dir, ignore_errors=True)
    with open_store(demo_dir) as store:
        store.save_subscriber(Subscriber(DEMO_EMAIL, DEMO_RULES, "Demo", subscribed_at=utc_now()))
    outbox = demo_dir / OUTBOX_DIR
    # Its own throw-away TinyDB store, whatever store.url says: the demo never writes the deployment's.
    demo_store = settings.store.model_copy(update={"url": TINYDB_STORE})
    demo_settings = settings.model_copy(update={"data_dir": demo_dir, "store": demo_store})
    report = run_once(demo_settings, day.as_of, sources=day.sources, mailer=OutboxMailer(outbox))
    return report, sorted(outbox.glob("*.eml"))


def email_part(eml: Path, kind: str) -> tuple[str, str]:
    """The email's subject and its ``kind`` part ("plain" or "html") with plain line ends (a 7-bit
    part reads back with the wire's CRLF)."""
    message = BytesParser(policy=default_policy).parsebytes(eml.read_bytes())
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=(kind,))
    return str(message["Subject"]), str(part.get_content()).replace("\r\n", "\n") if part else ""


def extract_html(eml: Path) -> Path:
    """The email's HTML part, written beside it as ``.html`` to open in a browser."""
    html_path = eml.with_suffix(".html")
    html_path.write_text(email_part(eml, "html")[1], encoding="utf-8")
    return html_path
