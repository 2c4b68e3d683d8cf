"""Apply the schema's named migrations in order, each once, each in its own transaction.

``schema_migrations(name, applied_at)`` records what a database has. Opening an old database applies
the rest of the list; a database that records a migration this mmat does not know was written by a
newer mmat, and is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from mmat.errors import StoreError
from mmat.store.dberrors import one_line

__all__ = ["MIGRATIONS_TABLE", "applied_migrations", "pending_migrations", "migrate"]

MIGRATIONS_TABLE = "schema_migrations"
_BOOTSTRAP = f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)"


def applied_migrations(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    """Names recorded in the database, oldest first ([] for a database mmat never opened)."""
    exists = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [MIGRATIONS_TABLE]
    ).fetchall()[0][0]
    if not exists:
        return []
    return [r[0] for r in cursor.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, name").fetchall()]


def pending_migrations(
    path: Path, applied: Sequence[str], migrations: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    known = {name for name, _ in migrations}
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise StoreError(
            f"{path} was written by a newer mmat (unknown migrations: {', '.join(unknown)}): "
            "upgrade mmat or point MMAT_HOME elsewhere"
        )
    done = set(applied)
    return [(name, sql) for name, sql in migrations if name not in done]


def migrate(connection: duckdb.DuckDBPyConnection, path: Path, migrations: Sequence[tuple[str, str]]) -> list[str]:
    """Bring the database up to date; return the names applied now."""
    cur = connection.cursor()
    try:
        cur.execute(_BOOTSTRAP)
        todo = pending_migrations(path, applied_migrations(cur), migrations)
        for name, sql in todo:
            try:
                cur.execute("BEGIN TRANSACTION")
                cur.execute(sql)
                cur.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, now()::TIMESTAMP)", [name])
                cur.execute("COMMIT")
            except duckdb.Error as e:
                cur.execute("ROLLBACK")
                raise StoreError(
                    f"migration {name} failed on {path} ({one_line(e)}): restore the file from a backup "
                    "or point MMAT_HOME elsewhere"
                ) from None
        return [name for name, _ in todo]
    finally:
        cur.close()
