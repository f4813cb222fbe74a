"""What a cycle's steps read from the settings, and nothing more.

Built once from :class:`digest.settings.Settings` by :func:`digest.cycle.run.cycle_config`, so
the steps below it never see the whole settings tree: a step's inputs are named here, a settings
layout change touches one function, and a test builds a cycle from the few values it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from digest.mail.message import DkimKey
from digest.mail.quota import Limits
from digest.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class CycleConfig:
    data_dir: Path
    public_url: str  # the base of the digest's signed links
    site_name: str
    sender_name: str  # the From name: ``sender_name``, else the site's name
    from_address: str
    secret_key: str = field(repr=False)  # signs the links and, with bounces, the envelope sender
    dkim_key: DkimKey | None
    lookback_days: int
    catchup_days: int
    retention_days: int
    arxiv_categories: tuple[str, ...]
    limits: Limits  # the relay's sending limits (``smtp.max_per_*``)
    connections: int  # ``smtp.connections``
    throttle_budget_seconds: float
    send_retry: RetryPolicy  # its delays also pace the throttle's waits
    http_timeout_seconds: float
    bounces_address: str | None = None
