"""``digest preview``: a subscriber's next digest, as the cycle would plan it now from the stored papers.

The digest comes from :func:`plan_from_store`, the plan a cycle makes after fetching (and that
``digest status`` counts as pending), and is made by the cycle's own :class:`Composer`, so a
preview shows what the next send would, bar the papers the next fetch brings. Nothing is fetched,
sent or recorded.
"""

from __future__ import annotations

from datetime import date

from digest.clock import utc_now
from digest.cycle.compose import Composer
from digest.cycle.days import window_days
from digest.cycle.plan import plan_from_store
from digest.cycle.run import cycle_config
from digest.mail.message import OutgoingEmail
from digest.models import Digest
from digest.settings import Settings
from digest.signing import Signer
from digest.state.backend import StoreBackend


def next_digest(store: StoreBackend, email: str, as_of: date, lookback_days: int) -> Digest | None:
    """The digest ``email`` would get from a cycle as of ``as_of``; None when nothing is new for them
    (or they are paused: the cycle plans for active subscribers only)."""
    window_start = min(window_days(as_of, lookback_days))
    plan = plan_from_store(store, window_start, as_of)
    return next((d for d in plan.digests if d.subscriber.email == email), None)


def render_preview(settings: Settings, digest: Digest) -> tuple[bytes, OutgoingEmail]:
    """The digest's HTML and message, as the cycle makes them (signed links, sender, DKIM)."""
    config = cycle_config(settings)
    return Composer(config, Signer(config.secret_key), utc_now).compose(digest)
