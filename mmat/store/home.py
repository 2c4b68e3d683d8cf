"""The store of a Settings' home (``settings.db_path``): open it for the CLI and library entry points
(migrating an older one, falling back to a reader while another process writes), or read one query
into a pandas DataFrame."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from mmat.config import Settings
from mmat.errors import StoreError, StoreLockedError, StoreMigrationPendingError

__all__ = ["open_store", "read_frame"]


@contextmanager
def open_store(settings: Settings, *, read_only: bool = False) -> Iterator["Store"]:  # noqa: F821
    """Open (and migrate) the store under settings.home; always closes, flushing pending writes.

    ``read_only`` while another process writes the store yields a :class:`~mmat.store.StoreReader`
    whose queries that process answers (see :mod:`mmat.store.read`).
    """
    from mmat.store import Store, StoreReader

    if read_only and not settings.db_path.exists():
        raise StoreError(f"no store at {settings.db_path}: run `mmat demo` or `mmat synth` first, or set MMAT_HOME.")
    if not read_only:
        settings.ensure_dirs()
    try:
        store = Store.open(settings.db_path, read_only=read_only)
    except StoreLockedError:
        if not read_only:
            raise
        store = StoreReader(settings.db_path)
    except StoreMigrationPendingError:  # a store from an older mmat: migrate once, then read as asked
        Store.open(settings.db_path).close()
        store = Store.open(settings.db_path, read_only=True)
    try:
        yield store
    finally:
        store.close()


def read_frame(table_or_sql: str, settings: Settings | None = None, params: list | None = None):
    """A store table or a SELECT as a pandas DataFrame, in one call (read-only; nested columns stay nested).

    ``read_frame("trajectories")``, ``read_frame("select domain, count(*) from tasks group by 1")``.
    For polars: ``polars.from_arrow(store.sql_arrow(sql))`` inside ``open_store``.
    """
    from mmat.config import load_settings

    text = table_or_sql.strip()
    sql = text if " " in text else f'SELECT * FROM "{text}"'
    with open_store(settings or load_settings(), read_only=True) as store:
        return store.sql_arrow(sql, params).to_pandas()
