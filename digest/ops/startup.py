"""Checks that ``serve`` and ``run`` make before they start, so a bad secret stops start-up, not a cycle."""

from __future__ import annotations

from digest.mail.message import load_dkim_key
from digest.paths import SECRET_KEY_FILE
from digest.settings import Settings, read_secret_file


def check_secrets(settings: Settings) -> None:
    """Read every secret now, as ``serve`` and ``run`` start: an unreadable password file must stop
    start-up with its name, not the 07:00 cycle (with the container reported healthy until then)."""
    if settings.smtp.password_file is not None:
        read_secret_file(settings.smtp.password_file, "smtp.password_file")
    load_dkim_key(settings.dkim, settings.smtp.from_address)
    if settings.secret_key is None and (settings.data_dir / SECRET_KEY_FILE).exists():
        read_secret_file(settings.data_dir / SECRET_KEY_FILE, "secret_key")
