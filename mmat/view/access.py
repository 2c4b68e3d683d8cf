"""How the viewer reads the store without getting in a writer's way: one function, :func:`read_store`.

DuckDB lets one process hold a database file, and a reader's lock would keep a writer from starting.
So the viewer never holds the file between requests: each request goes through
:func:`mmat.store.open_store` with ``read_only=True`` and closes it again. When nobody writes, that
is a read-only open of the file for the request's queries (with DuckDB's file access switched off, so
a free-text SQL filter cannot read files outside the database); when a job is writing, it is a
:class:`~mmat.store.StoreReader` whose queries the writing process answers on its read socket, with
everything that process committed before each query (see :mod:`mmat.store.read`).

Blobs are never read through here: :func:`blob_file` resolves a content id to a file under ``blobs/``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmat.config import Settings

__all__ = ["read_store", "write_store", "blob_file", "StoreSource"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}(\.[A-Za-z0-9_-]{1,16}){0,2}$")

# mmat.store refuses a second open of one file inside a process: the viewer's requests take turns.
_lock = threading.RLock()


@dataclass
class StoreSource:
    """Where a request's rows came from: the file itself, or the process writing it."""

    kind: str  # live | writer

    def describe(self) -> str:
        if self.kind == "live":
            return "live store (read-only)"
        return "answered by the process writing the store (a run in progress)"


@contextmanager
def read_store(settings: Settings) -> Iterator[tuple["Store", StoreSource]]:  # noqa: F821
    """The store for one request's reads, and where they come from; closed (lock released) afterwards."""
    from mmat.store import open_store
    from mmat.store import Store

    with _lock, open_store(settings, read_only=True) as store:
        if isinstance(store, Store):
            store.sql("SET enable_external_access = false")  # this connection only lives for the request
            yield store, StoreSource("live")
        else:
            yield store, StoreSource("writer")


@contextmanager
def write_store(settings: Settings) -> Iterator["Store"]:  # noqa: F821
    """The store opened read-write for one short write (a label); StoreLockedError if another process holds it."""
    from mmat.store import open_store

    with _lock, open_store(settings) as store:
        yield store


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
