"""The archive of sent digests' HTML under ``data_dir/archive``: what "view online" shows.

The cycle writes a digest's page as it renders it and deletes pages older than the retention when
it prunes the store, so the archive keeps what the store keeps and does not grow forever.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from digest.paths import ARCHIVE_DIR  # the web reads a page from it by the digest's id


def archive_dir(data_dir: Path) -> Path:
    """The archive, created private: each page names its subscriber, not for other local users."""
    archive = data_dir / ARCHIVE_DIR
    archive.mkdir(parents=True, exist_ok=True)
    archive.chmod(0o700)
    return archive


def prune_archive(archive: Path, horizon: date) -> int:
    """Delete archived digests older than ``horizon`` (the retention); returns how many went."""
    if not archive.is_dir():
        return 0
    cut = datetime.combine(horizon, datetime.min.time()).timestamp()
    removed = 0
    for path in archive.glob("*.html"):
        try:
            if path.stat().st_mtime < cut:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
