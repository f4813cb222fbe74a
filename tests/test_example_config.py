"""The example settings file documents every setting and loads as it is."""

from __future__ import annotations

import shutil
from pathlib import Path

from digest.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "digest.example.toml"


def test_example_loads_to_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "config" / "digest.toml")
    assert load_settings() == Settings()


def test_example_mentions_every_setting() -> None:
    text = EXAMPLE.read_text()

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            kind = field.annotation
            if isinstance(kind, type) and hasattr(kind, "model_fields"):
                found += keys(kind, f"{prefix}{name}.")
            else:
                found.append(name)
        return found

    missing = [k for k in keys(Settings) if k not in text]
    assert missing == []
