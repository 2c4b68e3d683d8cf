"""mmat's DuckDB store: migrations, the single writer, blobs, run records and the LM-call recorder.

Every command that writes runs inside :func:`run_lifecycle` (:mod:`mmat.store.runs`: the ``runs`` row,
how the run ended, resume markers, the progress bar); :mod:`mmat.store.rows` maps what runs produce to
rows and owns the per-seed tables and the cleanups a rerun does first.

Read-only code reads through :func:`read_sql` (works while a job writes the store; see
:mod:`mmat.store.read`) and decodes rows with :func:`table_rows`.

``LMCallRecorder`` is loaded on first use, so reading the store (``mmat sql``, benchmarks) does not
import DSPy.
"""

from typing import Any

from mmat.store.blobs import BlobStore
from mmat.store.context import Attribution, attributed, current_attribution, recording_task
from mmat.store.db import Store
from mmat.store.home import open_store, read_frame
from mmat.store.read import StoreReader, read_sql
from mmat.store.readonly import table_rows
from mmat.store.runs import RunHandle, resumable_run_id, run_lifecycle
from mmat.store.writer import Writer

__all__ = [
    "Store",
    "open_store",
    "read_frame",
    "StoreReader",
    "read_sql",
    "table_rows",
    "Writer",
    "BlobStore",
    "LMCallRecorder",
    "recording_task",
    "attributed",
    "current_attribution",
    "Attribution",
    "resumable_run_id",
    "run_lifecycle",
    "RunHandle",
]


def __getattr__(name: str) -> Any:
    if name == "LMCallRecorder":
        from mmat.store.recorder import LMCallRecorder

        return LMCallRecorder
    raise AttributeError(f"module 'mmat.store' has no attribute {name!r}")
