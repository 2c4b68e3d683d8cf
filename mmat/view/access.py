"""How the viewer reads the store without getting in a writer's way: one function, :func:`read_store`.

DuckDB lets one process hold a database file read-write, and a reader's shared lock would keep a
writer from starting. So the viewer never holds the file between requests: each request opens the
store read-only (through :func:`mmat.runtime.open_store`, so a "readers during jobs" mechanism added
there is used here unchanged), reads, and closes. When another process holds the file (a synth run
writing), the request reads a *snapshot*: a copy of the database file and its WAL taken while neither
changed (size and mtime equal before and after the copy), refreshed at most every
``SNAPSHOT_MAX_AGE_S`` seconds. A snapshot is as fresh as the writer's last flush.

Reads run with DuckDB's external access switched off, so a free-text SQL filter cannot read files
outside the database (``read_csv('/etc/passwd')``). Blobs are never read through here: see
:func:`blob_file`, which resolves a content id to a file under ``blobs/`` and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmat.config import Settings
from mmat.errors import StoreError

__all__ = ["read_store", "write_store", "blob_file", "StoreSource", "SNAPSHOT_MAX_AGE_S"]

SNAPSHOT_MAX_AGE_S = 2.0
_COPY_TRIES = 5
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}(\.[A-Za-z0-9_-]{1,16}){0,2}$")

# mmat.store refuses a second open of one file inside a process: the viewer's requests take turns.
_lock = threading.RLock()


@dataclass
class StoreSource:
    """Where a request's rows came from: the live file, or a snapshot copied at ``taken_at``."""

    kind: str  # live | snapshot
    taken_at: float | None = None

    def describe(self) -> str:
        if self.kind == "live":
            return "live store (read-only)"
        age = time.time() - (self.taken_at or time.time())
        return f"snapshot taken {age:.0f}s ago (another process is writing the store)"


class _Snapshots:
    """The newest consistent copy of a locked store, in a private temp folder of this process."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.taken_at = 0.0
        self.source_stat: tuple | None = None

    def _stat(self, db: Path) -> tuple:
        wal = db.with_name(db.name + ".wal")
        parts = []
        for p in (db, wal):
            try:
                st = p.stat()
                parts.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                parts.append(None)
        return tuple(parts)

    def path_for(self, db: Path) -> Path:
        """A snapshot of ``db``: reused while fresh or unchanged, else copied again."""
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="mmat-view-snapshot-"))
        target = self.dir / "mmat.duckdb"
        current = self._stat(db)
        fresh = time.time() - self.taken_at < SNAPSHOT_MAX_AGE_S
        if target.exists() and (current == self.source_stat or fresh):
            return target
        for _ in range(_COPY_TRIES):
            before = self._stat(db)
            self._copy(db, target)
            if self._stat(db) == before:  # nothing wrote while we copied: the pair is consistent
                self.source_stat, self.taken_at = before, time.time()
                return target
            time.sleep(0.05)
        raise StoreError(f"{db} changed during every one of {_COPY_TRIES} snapshot copies: reload the page in a moment")

    def _copy(self, db: Path, target: Path) -> None:
        wal, target_wal = db.with_name(db.name + ".wal"), target.with_name(target.name + ".wal")
        shutil.copyfile(db, target)
        if wal.exists():
            shutil.copyfile(wal, target_wal)
        elif target_wal.exists():
            target_wal.unlink()


_snapshots = _Snapshots()


def _held_by_another_process(error: StoreError) -> bool:
    return "open in another process" in str(error)


@contextmanager
def read_store(settings: Settings) -> Iterator[tuple["Store", StoreSource]]:  # noqa: F821
    """The store for one request's reads, and where it came from; closed (lock released) afterwards."""
    from mmat.runtime import open_store
    from mmat.store import Store
    from mmat.store.blobs import BlobStore

    with _lock, ExitStack() as stack:
        try:
            store = stack.enter_context(open_store(settings, read_only=True))
            source = StoreSource("live")
        except StoreError as e:
            if not _held_by_another_process(e):
                raise
            store = stack.enter_context(Store.open(_snapshots.path_for(settings.db_path), read_only=True))
            store.blobs = BlobStore(settings.blobs_dir)  # blob paths resolve under the real home
            source = StoreSource("snapshot", _snapshots.taken_at)
        _lock_down(store)
        yield store, source


@contextmanager
def write_store(settings: Settings) -> Iterator["Store"]:  # noqa: F821
    """The store opened read-write for one short write (a label); StoreError if another process holds it."""
    from mmat.runtime import open_store

    with _lock, open_store(settings) as store:
        yield store


def _lock_down(store) -> None:
    store.sql("SET enable_external_access = false")


def blob_file(settings: Settings, sha256: str) -> Path | None:
    """The blob with this content id (sha256 hex), or None. Never a path the caller names."""
    if not _SHA256.match(sha256):
        return None
    folder = settings.blobs_dir / sha256[:2]
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(sha256) and _BLOB_NAME.match(n))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            return path
    return None
