"""DuckDB exceptions -> one-line StoreErrors that say what to do.

DuckDB's messages are multi-line (a query excerpt and a caret) and name no fix. The CLI prints a
StoreError as one line, so the translation happens here, once, for opening, querying and writing.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmat.errors import StoreError, StoreLockedError

__all__ = ["one_line", "open_error", "sql_error"]

_PID = re.compile(r"\(PID (\d+)\)")


def one_line(error: BaseException) -> str:
    """The lines of a DuckDB message that say what went wrong, joined (query excerpt and caret dropped)."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith("LINE ") and set(ln) != {"^"}]
    return " ".join(kept) or type(error).__name__


def open_error(path: Path, error: BaseException) -> StoreError:
    """Why ``duckdb.connect(path)`` failed, in the user's terms; the file is never touched."""
    text = str(error)
    if "Could not set lock" in text or "Conflicting lock" in text:
        pid = _PID.search(text)
        who = f" (pid {pid.group(1)})" if pid else ""
        return StoreLockedError(
            f"{path} is open in another process{who}: stop it or use another MMAT_HOME",
            pid=int(pid.group(1)) if pid else None,
        )
    if "not a valid DuckDB database" in text:
        return StoreError(f"{path} is not a DuckDB database: move it away or point MMAT_HOME elsewhere")
    if "read-only mode: database does not exist" in text:
        return StoreError(f"{path} does not exist yet: run a command that writes to the store first, or check MMAT_HOME")
    return StoreError(f"cannot open {path} ({one_line(error)}): check the path, its permissions, or point MMAT_HOME elsewhere")


def sql_error(error: BaseException) -> StoreError:
    return StoreError(f"SQL failed: {one_line(error)}: fix the query (list the tables with SHOW TABLES)")
