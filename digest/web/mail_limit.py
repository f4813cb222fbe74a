"""The sign-up form's mails per mailbox (one an hour by default): kept where every web process sees it.

On a TinyDB store one process serves the web (``digest serve``), so the count lives in its memory
(:class:`~digest.web.limits.FormLimits`), saved to ``data_dir``'s limits file after each mail for
restarts. On PostgreSQL any number of ``digest web`` replicas serve it, and a count per process
would mail a stranger once per replica, so it lives in the database
(:mod:`digest.state.postgres.limits`): one atomic claim per mail, whichever replica sends it.
Either way a mailbox is known only by a keyed hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from digest.state.backend import StoreBackend, is_postgres
from digest.web.front import Front

if TYPE_CHECKING:
    from digest.state.postgres.store import PostgresStore


def _postgres(store: StoreBackend) -> PostgresStore:
    from digest.state.postgres.store import PostgresStore  # psycopg, only for a PostgreSQL store

    if not isinstance(store, PostgresStore):
        raise TypeError("the shared mail limit needs the PostgreSQL store")
    return store


class MailLimit:
    """Claim a confirmation mail to a mailbox (by key), take it back if sending failed, save."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.shared = is_postgres(front.settings.store.url)

    async def claim(self, key: str, now: float) -> bool:
        """Yes, and the mail is counted; or no: the mailbox had its mails within the window."""
        if not self.shared:
            return self.front.limits.address_mails.allow(key, now)
        from digest.state.postgres.limits import claim_mail, release_mail

        config, at = self.front.limits.config, datetime.fromtimestamp(now, UTC)
        window, limit = config.address_window_seconds, config.mails_per_address
        # A claim that commits after the person got "try again" is taken back: else their retry
        # within the window would find it counted, and no mail would ever go.
        return bool(
            await self.front.write(
                lambda store: claim_mail(_postgres(store), key, at, window, limit),
                undo=lambda store: release_mail(_postgres(store), key),
            )
        )

    async def release(self, key: str) -> None:
        """Take the latest claim back: its mail was not sent."""
        if not self.shared:
            self.front.limits.address_mails.forget_last(key)
            return
        from digest.state.postgres.limits import release_mail

        await self.front.write(lambda store: release_mail(_postgres(store), key))

    def save(self, now: float) -> None:
        """After a mail, in a worker thread: the TinyDB front writes its file; the database has it."""
        if not self.shared:
            self.front.limits.save(now)
