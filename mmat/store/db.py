"""The DuckDB store: one file under MMAT_HOME, migrated on open, one writer, many readers.

Readers call :meth:`Store.sql` (each call on its own cursor, fully fetched, so threads never share a
half-read result) or :meth:`Store.cursor`. Writes go only through :attr:`Store.writer` (see
:mod:`mmat.store.writer`). Blobs live next to the database file, in ``<home>/blobs``.

One process may hold the file read-write; a second writer gets a StoreError naming the pid (after
waiting ``WRITER_WAIT_S`` for a short read-only open to end). The process holding the file serves
other processes' reads on a local socket (:mod:`mmat.store.readserver`; read with
:func:`mmat.store.read_sql`). Inside one process, open the store once and share the object: a second
``Store.open`` of the same file is refused, because two writers on one database would race.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from mmat.config import Settings
from mmat.errors import StoreError, StoreLockedError, StoreMigrationPendingError
from mmat.store import runs
from mmat.store.blobs import BlobStore
from mmat.store.columns import TableSpec
from mmat.store.dberrors import open_error, sql_error
from mmat.store.migrate import applied_migrations, migrate, pending_migrations
from mmat.store.readonly import run_read_query
from mmat.store.readserver import ReadServer
from mmat.store.schema import MIGRATIONS
from mmat.store.writer import Writer

__all__ = ["Store", "open_store_in_process", "WRITER_WAIT_S"]

log = logging.getLogger(__name__)

Params = Sequence[Any] | Mapping[str, Any] | None

_open_stores: "dict[Path, Store]" = {}  # strong refs: a forgotten store is still flushed at exit
_open_lock = threading.Lock()
WRITER_WAIT_S = 3.0  # a reader's one-query read-only open is short: a writer waits this long for it


def open_store_in_process(path: Path) -> "Store | None":
    """The Store this process already has open on ``path``, if any."""
    with _open_lock:
        store = _open_stores.get(Path(path).absolute())
    return store if store is not None and not store.closed else None


class Store:
    """An open mmat database. Create it with :meth:`Store.open`; close it (or use ``with``)."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool):
        self._con = connection
        self.path = path
        self.read_only = read_only
        self.blobs = BlobStore(self.home / "blobs")
        self._specs: dict[str, TableSpec] = {}
        self._specs_lock = threading.Lock()
        self._writer: Writer | None = None
        self._writer_lock = threading.Lock()
        self._closed = False
        self._read_server: ReadServer | None = None

    # --- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        read_only: bool = False,
        migrations: Sequence[tuple[str, str]] | None = None,
        serve_reads: bool = True,
    ) -> "Store":
        """Open (creating and migrating if needed) the database at ``path``.

        ``migrations`` defaults to :data:`mmat.store.schema.MIGRATIONS`; tests pass a prefix to build
        an old database. A read-only open never migrates: it refuses a database that needs migrations.
        A read-write open serves other processes' reads on a socket unless ``serve_reads`` is False.
        """
        path = Path(path).expanduser().absolute()
        migrations = MIGRATIONS if migrations is None else list(migrations)
        if path.is_dir():
            raise StoreError(f"{path} is a directory, not a DuckDB database: point MMAT_HOME elsewhere")
        with _open_lock:
            if path in _open_stores:
                raise StoreError(
                    f"{path} is already open in this process: reuse that Store object or close it first"
                )
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            con = _connect(path, read_only)
            try:
                if read_only:
                    todo = pending_migrations(path, applied_migrations(con), migrations)
                    if todo:
                        names = ", ".join(name for name, _ in todo)
                        raise StoreMigrationPendingError(
                            f"{path} needs migrations ({names}): open it read-write once (any mmat command that writes)"
                        )
                else:
                    migrate(con, path, migrations)
            except BaseException:
                con.close()
                raise
            store = cls(con, path, read_only=read_only)
            if not read_only and serve_reads:
                store._serve_reads()
            _open_stores[path] = store
        return store

    def _serve_reads(self) -> None:
        server = ReadServer(self.path, self.cursor)
        try:
            server.start()
        except (OSError, StoreError) as e:  # the store still works; only other processes cannot read during jobs
            log.warning("no read socket for %s (%s): other processes cannot read it while this one runs", self.path, e)
            return
        self._read_server = server

    @classmethod
    def for_settings(cls, settings: Settings, *, read_only: bool = False) -> "Store":
        """The store of a Settings object: ``<home>/mmat.duckdb``."""
        return cls.open(settings.db_path, read_only=read_only)

    @property
    def home(self) -> Path:
        """The folder that holds the database file (MMAT_HOME); blobs live in ``home/blobs``."""
        return self.path.parent

    @property
    def blobs_dir(self) -> Path:
        return self.blobs.root

    # --- reading ----------------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own connection to this database) for one thread's reads. Close it after use."""
        self._check_open()
        return self._con.cursor()

    def sql(self, query: str, params: Params = None) -> list[dict[str, Any]]:
        """Run a query and return every row as a dict (JSON columns come back as JSON text)."""
        self._check_open()
        with self._con.cursor() as cur:
            try:
                cur.execute(query, params)
                if cur.description is None:
                    return []
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
            except duckdb.Error as e:
                raise sql_error(e) from None

    def sql_arrow(self, query: str, params: Params = None) -> pa.Table:
        """Run a query and return an Arrow table (fast for large results and for pandas/polars)."""
        self._check_open()
        with self._con.cursor() as cur:
            try:
                return cur.sql(query, params=params).to_arrow_table()
            except duckdb.Error as e:
                raise sql_error(e) from None

    def read_arrow(self, query: str, params: Params = None) -> pa.Table:
        """One checked read statement (see :mod:`mmat.store.readonly`): JSON columns typed ``arrow.json``."""
        self._check_open()
        with self._con.cursor() as cur:
            return run_read_query(cur, query, params)

    def tables(self) -> list[str]:
        return [r["table_name"] for r in self.sql("SELECT table_name FROM duckdb_tables() ORDER BY 1")]

    def table_spec(self, table: str) -> TableSpec:
        """Columns, Arrow schema and primary key of a table (cached)."""
        with self._specs_lock:
            spec = self._specs.get(table)
            if spec is None:
                with self._con.cursor() as cur:
                    spec = TableSpec.read(cur, table)
                self._specs[table] = spec
            return spec

    # --- writing ----------------------------------------------------------------------------------
    @property
    def writer(self) -> Writer:
        """The single writer (started on first use)."""
        self._check_open()
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only: open it without read_only=True to write")
        with self._writer_lock:
            if self._writer is None:
                self._writer = Writer(self._con, self.table_spec)
            return self._writer

    def start_run(
        self, kind: str, settings: Settings | dict[str, Any], command: str, run_id: str | None = None
    ) -> str:
        """Record a run as running (a known run_id is resumed); return its run_id."""
        return runs.start_run(self, kind, settings, command, run_id)

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any], *,
                   settings_update: dict[str, Any] | None = None) -> None:
        """Record how a run ended: status done | failed | interrupted, a JSON-able summary, settings it adds."""
        runs.finish_run(self, run_id, status, summary, settings_update=settings_update)

    def put_blob(self, data: bytes | Path, suffix: str = "") -> tuple[str, str]:
        """Store bytes or a file under ``blobs/``; return (relative path, sha256). Idempotent."""
        return self.blobs.put(data, suffix)

    def blob_path(self, rel: str) -> Path:
        return self.blobs.path(rel)

    # --- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush and stop the writer, checkpoint, close the file. Idempotent; raises pending write errors."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._read_server is not None:
                self._read_server.close()
            if self._writer is not None:
                self._writer.close()
        finally:
            self._con.close()
            with _open_lock:
                if _open_stores.get(self.path) is self:
                    del _open_stores[self.path]

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "open")
        return f"Store({str(self.path)!r}, {state})"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed: open it again with Store.open")


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + (0.0 if read_only else WRITER_WAIT_S)
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as e:
            error = open_error(path, e)
            if not isinstance(error, StoreLockedError) or time.monotonic() >= deadline:
                raise error from None
        time.sleep(0.1)


@atexit.register
def _close_open_stores() -> None:
    """A clean interpreter exit flushes what was put, even if the caller forgot Store.close()."""
    for store in list(_open_stores.values()):
        try:
            store.close()
        except StoreError as e:
            log.error("closing %s at exit: %s", store.path, e)
