"""`mmat export`: select from the store, rebuild conversations, write one of the export formats."""

from __future__ import annotations

from pathlib import Path

from mmat.config import Settings
from mmat.errors import ConfigError

__all__ = ["run_export"]


def run_export(settings: Settings, fmt: str, out: Path, *, where: str | None = None, pairs: bool = False,
               model: str | None = None) -> tuple[Path, int]:
    """Write the selected trajectories (or pairs) as ``fmt`` under ``out``; returns (main file, rows)."""
    from mmat.lm import configure_litellm
    from mmat.pipeline.conversations import DEFAULT_SFT_WHERE, load_conversations, load_preference_rows
    from mmat.runtime import open_store
    from mmat.store.export import export_conversations, export_parquet, export_preferences

    configure_litellm(settings)
    model = model or settings.controller_model
    with open_store(settings, read_only=True) as store:
        if pairs:
            rows, _ = load_preference_rows(store, where or "TRUE", model=model)
            if not rows:
                raise ConfigError("no preference pairs match: run `mmat prefs` first, or widen --where.")
            return export_preferences(rows, fmt, out), len(rows)
        if fmt == "parquet":
            path = export_parquet(store, out, where)
            return path, store.sql(f"SELECT count(*) AS n FROM read_parquet('{path}')")[0]["n"]
        conversations, _ = load_conversations(store, where or DEFAULT_SFT_WHERE, model=model)
        if not conversations:
            raise ConfigError("no trajectories match: run `mmat synth` first, or widen --where.")
        return export_conversations(conversations, fmt, out), len(conversations)
