"""Reading the store from any process, whether or not a job is writing it: :func:`read_sql`.

Every read-only command (``mmat sql``, ``runs``, ``show``, the web viewer) goes through here. It
chooses the path by who holds the file:

- this process has the store open: query it directly;
- another process writes it: ask that process on its read socket (:mod:`mmat.store.readserver`);
  the answer includes everything the writer committed before the query started;
- nobody holds it: open it read-only for this one query and close it again at once, so a job that
  starts a moment later is not locked out.

Readers that must keep a Store-like object for several queries (``open_store(read_only=True)`` in
commands that take a store) get a :class:`StoreReader` when a writer holds the file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmat.config import Settings
from mmat.errors import StoreError, StoreLockedError, StoreMigrationPendingError
from mmat.store.blobs import BlobStore
from mmat.store.readonly import Params, check_read_query, table_rows
from mmat.store.readserver import WriterUnreachable, query_writer

__all__ = ["read_sql", "StoreReader", "LOCK_WAIT_S"]

LOCK_WAIT_S = 10.0  # how long a reader waits for a writer that is starting (migrating) or stopping
_RETRY_S = 0.1


def db_path_of(where: Settings | Path | str) -> Path:
    if isinstance(where, Settings):
        return where.db_path.absolute()
    path = Path(where).expanduser().absolute()
    return path / "mmat.duckdb" if path.is_dir() else path


def read_sql(where: Settings | Path | str, query: str, params: Params = None) -> pa.Table:
    """Run one read statement on the store of ``where`` (Settings, MMAT_HOME folder or database file).

    Returns an Arrow table; JSON columns keep the ``arrow.json`` type, so
    :func:`mmat.store.readonly.table_rows` (re-exported as ``mmat.store.table_rows``) decodes them.
    Works while another process writes the store. Raises StoreError for a bad query, a missing
    store, or a writer that does not answer within ``LOCK_WAIT_S``.
    """
    from mmat.store.db import Store, open_store_in_process

    db = db_path_of(where)
    check_read_query(query)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        own = open_store_in_process(db)
        if own is not None:
            return own.read_arrow(query, params)
        try:
            return query_writer(db, query, params)
        except WriterUnreachable:
            pass
        try:
            with Store.open(db, read_only=True) as store:
                return store.read_arrow(query, params)
        except StoreMigrationPendingError:  # a store from an older mmat: migrate once, then read
            Store.open(db).close()
        except StoreLockedError as e:
            if time.monotonic() > deadline:
                who = f" (pid {e.pid})" if e.pid else ""
                raise StoreError(
                    f"{db} is open in another process{who} that does not answer reads (an older mmat, or not "
                    "mmat at all): wait for it to finish, or query a copy of the file"
                ) from None
            time.sleep(_RETRY_S)


class StoreReader:
    """A read-only stand-in for :class:`~mmat.store.Store` whose queries go to the writing process."""

    read_only = True

    def __init__(self, path: Path):
        self.path = Path(path).absolute()
        self.blobs = BlobStore(self.home / "blobs")
        self.closed = False
        read_sql(self.path, "SELECT 1")  # fails now, with the reason, if nobody answers

    @property
    def home(self) -> Path:
        return self.path.parent

    @property
    def blobs_dir(self) -> Path:
        return self.blobs.root

    def blob_path(self, rel: str) -> Path:
        return self.blobs.path(rel)

    def sql_arrow(self, query: str, params: Params = None) -> pa.Table:
        self._check_open()
        return read_sql(self.path, query, params)

    def sql(self, query: str, params: Params = None) -> list[dict[str, Any]]:
        """Rows as dicts, JSON columns as JSON text (as :meth:`Store.sql` returns them)."""
        return table_rows(self.sql_arrow(query, params), parse_json=False)

    def tables(self) -> list[str]:
        return [r["table_name"] for r in self.sql("SELECT table_name FROM duckdb_tables() ORDER BY 1")]

    @property
    def writer(self):
        raise StoreError(f"{self.path} is being written by another process: this command can only read it now")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"the reader of {self.path} is closed: open the store again")
