"""The small writing commands a person runs by hand: `mmat label import` and `mmat pool add`.

Each is a run like any other (kinds ``label`` and ``pool``), so `mmat runs` shows when labels or images came
in, from which file, and a refused sheet is recorded as failed with its reason (nothing is written then).
"""

from __future__ import annotations

from pathlib import Path

from mmat.config import Settings

__all__ = ["run_label_import", "run_pool_add"]


def run_label_import(settings: Settings, path: Path, *, command: str | None = None) -> int:
    """Read a filled label sheet (CSV or JSONL) into ``verdicts`` (verifier = label); returns how many labels.
    All rows are checked first: one bad row and nothing is written (the run is recorded failed)."""
    from mmat.optimizers import import_labels
    from mmat.store import open_store
    from mmat.store import run_lifecycle

    source = str(Path(path).resolve())
    with open_store(settings) as store, \
            run_lifecycle(store, "label", {"source": source}, command or f"mmat label import {path}") as run:
        n = import_labels(store, path)
        run.summary = {"labels": n, "source": source}
    return n


def run_pool_add(settings: Settings, folder: Path, *, captions: Path | None = None, command: str | None = None) -> list:
    """Index a folder of images (captions from a sidecar file) into the image pool; returns the images added."""
    from mmat.store import open_store
    from mmat.store import run_lifecycle
    from mmat.store.pool_images import add_pool_folder

    record = {"folder": str(Path(folder).resolve()), "captions": str(Path(captions).resolve()) if captions else None}
    with open_store(settings) as store, \
            run_lifecycle(store, "pool", record, command or f"mmat pool add {folder}") as run:
        added = add_pool_folder(store, folder, captions_file=captions)
        run.summary = {"images": len(added), "pool": Path(folder).name}
    return added
