"""The README's configuration table names every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from functions.common.settings import Settings

# Set by the program itself (local mode), not by operators.
INTERNAL = {"jan_embedded"}


def test_every_setting_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    names = {
        "DB_POSTGRESQL_READ1_DSN" if n == "db_postgresql_read_dsns" else n.upper()
        for n in Settings.model_fields
        if n not in INTERNAL
    }
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"settings missing from README.md: {missing}"
