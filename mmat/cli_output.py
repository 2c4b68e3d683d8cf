"""Render query results for the terminal: a rich table, JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

__all__ = ["render_rows", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = ("table", "json", "csv")
MAX_CELL_CHARS = 80  # keeps wide JSON columns from wrapping a table into unreadability


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def render_rows(rows: list[dict[str, Any]], fmt: str = "table", columns: Iterable[str] | None = None) -> str:
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fmt == "json":
        return json.dumps(rows, default=str, ensure_ascii=False, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (v if isinstance(v, (str, int, float)) or v is None else json.dumps(v, default=str)) for k, v in row.items()})
        return buf.getvalue().rstrip("\n")
    table = Table(show_lines=False)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in cols))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().rstrip("\n") + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"
