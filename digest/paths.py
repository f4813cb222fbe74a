"""The names of what digest keeps in ``data_dir``, in one place.

The module that owns a file, ``doctor``, ``backup``, the start-up checks and the web all name
these files; one list keeps them in step, and shows a newcomer what the data directory holds.
Paths are ``data_dir / NAME``: ``data_dir`` comes from the settings, relative to where digest runs.
"""

from __future__ import annotations

# The store (digest.state.store): one TinyDB file, its delivery journal, and the lock its writer holds.
STORE_FILE = "digest.json"
JOURNAL_FILE = "deliveries.journal"
FOLDED_JOURNAL_FILE = "deliveries.journal.1"  # the journal folded into the last flush, kept beside the .bak
LOCK_FILE = "digest.lock"
# Unsubscribes recorded while another process holds the store (digest.state.departures).
PENDING_FILE = "unsubscribes.pending"
KEPT_DIR = "unsubscribes.kept"  # a PostgreSQL web's unsubscribes while the database did not answer
# The signing key, generated once when settings give none (digest.settings).
SECRET_KEY_FILE = "secret_key"
# What the relay's quota has counted (digest.mail.quota) and each address's bounces (digest.mail.bounces).
QUOTA_FILE = "send_quota.json"
BOUNCES_FILE = "bounces.json"
# The web's rate limits, kept across restarts (digest.web.limits).
LIMITS_FILE = "web-limits.json"

# Folders: emails written as .eml files when no SMTP host is set, sent digests for "view online",
# `digest preview` pages, and the demo's own data.
OUTBOX_DIR = "outbox"
ARCHIVE_DIR = "archive"
PREVIEW_DIR = "preview"
DEMO_DIR = "demo"
