"""`mmat export`: select from the store, rebuild conversations, write one of the export formats.

Every format uses one default selection (``TRAINING_SELECTION``: what `mmat finetune` trains on);
``--where`` replaces it. Next to the rows go mmat's own records (for `mmat import mmat`), the
images/files the rows reference (``--images``) and a dataset card.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mmat.config import Settings
from mmat.errors import ConfigError

__all__ = ["ExportResult", "run_export"]


@dataclass
class ExportResult:
    path: Path  # the main file or folder a trainer reads
    n_rows: int
    where: str
    files: list[str] = field(default_factory=list)
    n_images: int = 0
    card: Path | None = None
    skipped: list[str] = field(default_factory=list)


def _card_stats(store, traj_ids: list[str]) -> dict:
    rows = store.sql(
        "SELECT t.controller, t.tools, t.origin, k.domain, r.settings FROM trajectories t JOIN tasks k USING (task_id) "
        "LEFT JOIN runs r ON r.run_id = t.run_id WHERE t.traj_id IN (SELECT unnest(?))", [traj_ids])
    import json

    def setting(r, key):
        s = r["settings"]
        s = json.loads(s) if isinstance(s, str) else (s or {})
        return s.get(key)

    count = lambda values: dict(Counter(v for v in values if v).most_common())  # noqa: E731
    return {
        "controllers": count(r["controller"] for r in rows),
        "teachers": count(setting(r, "teacher") for r in rows),
        "verifiers": count(setting(r, "verifier") for r in rows),
        "tools": sorted({t for r in rows for t in (r["tools"] or [])}),
        "domains": count(r["domain"] for r in rows),
        "origins": count(r["origin"] or "synth" for r in rows),
    }


def run_export(settings: Settings, fmt: str, out: Path, *, where: str | None = None, pairs: bool = False,
               model: str | None = None, images: str | None = None, text: bool = False,
               license: str | None = None) -> ExportResult:
    """Write the selected trajectories (or pairs) as ``fmt`` under ``out``."""
    import mmat
    from mmat.lm import configure_litellm
    from mmat.pipeline.training_data import TRAINING_SELECTION, load_conversations, load_preference_rows
    from mmat.store import open_store
    from mmat.store.export import export_conversations, export_preferences, images_mode
    from mmat.store.export.card import update_card
    from mmat.store.export.media import MediaSink
    from mmat.store.export.records import pair_records, trajectory_records, write_records
    from mmat.store.runs import utcnow

    mode = images_mode(fmt, images)
    configure_litellm(settings)
    model = model or settings.controller_model
    out = Path(out)
    multimodal = False if text else None
    with open_store(settings, read_only=True) as store:
        if pairs:
            where = where or "TRUE"
            rows, selection = load_preference_rows(store, where, model=model, multimodal=multimodal)
            if not rows:
                raise ConfigError(f"no preference pairs match '{where}': run `mmat prefs` first, or widen --where.")
            ids = [r.meta["pair_id"] for r in rows]
            out.mkdir(parents=True, exist_ok=True)
            records = pair_records(store, ids, MediaSink(out, mode))
            traj_ids = sorted({r["trajectory"]["traj_id"] for r in records})
            name = "mmat_dpo"
        else:
            where = where or TRAINING_SELECTION
            rows, selection = load_conversations(store, where, model=model, multimodal=multimodal)
            if not rows:
                raise ConfigError(f"no trajectories match '{where}': run `mmat synth` first, or widen --where.")
            traj_ids = [c.meta["traj_id"] for c in rows]
            out.mkdir(parents=True, exist_ok=True)
            records = trajectory_records(store, traj_ids, MediaSink(out, mode))
            name = "mmat_sft"
        stats = _card_stats(store, traj_ids)
    record_file = write_records(records, out, parquet=fmt == "parquet", pairs=pairs)
    if fmt == "parquet":
        path, files, n_images = out / record_file, [record_file], sum(
            len([f for f in (r.get("trajectory", r))["files"] if f["modality"] == "image"]) for r in records)
    else:
        writer = export_preferences if pairs else export_conversations
        path, files, n_images = writer(rows, fmt, out, images=mode, name=name, text=text)
        files.append(record_file)
    entry = {"name": name, "format": fmt, "kind": "dpo" if pairs else "sft", "n_rows": len(rows), "n_images": n_images,
             "images": mode, "files": files, "where": where, "model": model, "text": text,
             "created_at": utcnow().isoformat(timespec="seconds"), **stats}
    card = update_card(out, entry, mmat_version=mmat.__version__, license=license)
    return ExportResult(path=path, n_rows=len(rows), where=where, files=files, n_images=n_images, card=card,
                        skipped=list(selection.skipped))
