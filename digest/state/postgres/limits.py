"""The sign-up form's per-mailbox mail limit in PostgreSQL, one for every ``digest web`` replica.

Kept in each process's memory, N replicas behind a load balancer would each mail a stranger's
inbox once per window, and overwrite each other's saved copy. Here a mail is claimed by one
statement, ``INSERT … ON CONFLICT DO UPDATE … WHERE``: PostgreSQL locks the mailbox's row, so two
replicas claiming at once are taken one after the other and the second sees the first's claim.
Rows name a mailbox only by the keyed hash the web front makes (never the address); a row whose
mails are all older than the window is deleted by a later claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from digest.state.postgres.store import PostgresStore

PRUNED_PER_CLAIM = 100  # expired rows a claim deletes, skipping any another claim holds

CLAIM = """
INSERT INTO signup_mails AS m (key, sent, last) VALUES (%(key)s, ARRAY[%(at)s::timestamptz], %(at)s)
ON CONFLICT (key) DO UPDATE
    SET sent = ARRAY(SELECT s FROM unnest(m.sent) AS s WHERE s > %(since)s ORDER BY s) || %(at)s::timestamptz,
        last = greatest(m.last, %(at)s)
    WHERE (SELECT count(*) FROM unnest(m.sent) AS s WHERE s > %(since)s) < %(limit)s
RETURNING 1
"""
PRUNE = """
DELETE FROM signup_mails WHERE key IN (
    SELECT key FROM signup_mails WHERE last <= %(since)s LIMIT %(count)s FOR UPDATE SKIP LOCKED
)
"""
# The latest mail of the row is taken back (its sending failed), as RateLimit.forget_last does.
RELEASE = "UPDATE signup_mails SET sent = sent[1:cardinality(sent) - 1] WHERE key = %(key)s AND cardinality(sent) > 0"


def claim_mail(store: PostgresStore, key: str, at: datetime, window_seconds: float, limit: int) -> bool:
    """Count a mail to mailbox ``key`` at ``at`` and say yes, or say no (and count nothing) when
    ``limit`` mails went to it within the ``window_seconds`` before ``at``, from any replica."""
    since = at - timedelta(seconds=window_seconds)
    with store.transaction() as connection:
        connection.execute(PRUNE.encode(), {"since": since, "count": PRUNED_PER_CLAIM})
        row = connection.execute(CLAIM.encode(), {"key": key, "at": at, "since": since, "limit": limit}).fetchone()
    return row is not None


def release_mail(store: PostgresStore, key: str) -> None:
    """Take back the latest mail counted for ``key``: it was never sent, so it must not count."""
    with store.transaction() as connection:
        connection.execute(RELEASE.encode(), {"key": key})
