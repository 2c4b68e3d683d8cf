"""Render query results for the terminal and for tools: a rich table, JSON or CSV.

- ``json``: one JSON array of objects; JSON columns are JSON values (not strings), timestamps ISO 8601.
  ``jq '.[0].settings.teacher'`` works without ``fromjson``.
- ``csv``: a header row always (also for an empty result); timestamps ISO 8601 without quotes, so
  ``pandas.read_csv(..., parse_dates=[...])`` parses them; nested values as compact JSON text.
- ``table``: cells cut at ``max_width`` characters (``--max-width``), or shown whole (``--full``).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import shutil
import uuid
from typing import Any, Iterable

import pyarrow as pa
from rich.console import Console
from rich.table import Table

__all__ = ["render_rows", "render_arrow", "to_json", "OUTPUT_FORMATS", "MAX_CELL_CHARS"]

OUTPUT_FORMATS = ("table", "json", "csv")
MAX_CELL_CHARS = 80  # keeps wide JSON columns from wrapping a table into unreadability
TABLE_WIDTH = 200  # console width when stdout is not a terminal


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback for what DuckDB rows hold besides JSON types."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


def to_json(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(value, default=_plain, ensure_ascii=False, indent=indent)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return json.dumps(value, default=_plain, ensure_ascii=False, separators=(",", ":"))


def _cell(value: Any, max_width: int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dt.datetime, dt.date, dt.time)):
        text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    else:
        text = json.dumps(value, default=_plain, ensure_ascii=False)
    if max_width is None or len(text) <= max_width:
        return text
    return text[: max(max_width - 1, 0)] + "…"


def render_rows(
    rows: list[dict[str, Any]],
    fmt: str = "table",
    columns: Iterable[str] | None = None,
    *,
    full: bool = False,
    max_width: int | None = MAX_CELL_CHARS,
) -> str:
    """Rows (dicts with JSON already decoded) as ``fmt``; ``columns`` names them when there are none."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in cols])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    table = Table(show_lines=full)
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c), None if full else max_width) for c in cols))
    width = shutil.get_terminal_size((TABLE_WIDTH, 24)).columns
    console = Console(width=max(width, 40), record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().rstrip("\n") + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"


def render_arrow(table: pa.Table, fmt: str = "table", **options: Any) -> str:
    """An Arrow result of :func:`mmat.store.read_sql` (JSON decoded; column names kept when empty)."""
    from mmat.store.readonly import table_rows

    return render_rows(table_rows(table), fmt, columns=table.column_names, **options)


# --- one task or trajectory (mmat show) --------------------------------------------------------------
def _indent(text: Any, pad: str = "    ") -> str:
    text = "" if text is None else str(text)
    return "\n".join(pad + line for line in text.splitlines()) if text else pad + "(empty)"


def _file_lines(files: list[dict[str, Any]]) -> list[str]:
    if not files:
        return ["files: none"]
    lines = ["files:"]
    for f in files:
        caption = f" — {f['caption']}" if f.get("caption") else ""
        lines.append(f"  {f['name']} ({f.get('modality')}, {f.get('mime')}, {f.get('bytes')} bytes, {f.get('source')}){caption}")
        lines.append(f"    {f['path']}")
    return lines


def _verdict_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    if not verdicts:
        return ["verdicts: none"]
    lines = ["verdicts:"]
    for v in verdicts:
        score = f", score {v['score']}" if v.get("score") is not None else ""
        lines.append(f"  {v['verifier']} ({v.get('model') or '-'}): {v.get('verdict')}{score}")
        for reason in v.get("reasons") or []:
            lines.append(f"    - {reason if isinstance(reason, str) else to_json(reason, indent=None)}")
        if v.get("rewritten_query"):
            lines.append(f"    rewritten query: {v['rewritten_query']}")
    return lines


def _task_lines(task: dict[str, Any] | None) -> list[str]:
    if task is None:
        return ["task: not in the store"]
    lines = [f"task {task['task_id']} ({task.get('split')}, {task.get('domain')}) · status {task.get('status')}"]
    if task.get("status_reason"):
        lines.append(f"reason: {task['status_reason']}")
    lines.append("query:")
    lines.append(_indent(task.get("query")))
    if task.get("original_query") and task["original_query"] != task.get("query"):
        lines += ["original query:", _indent(task["original_query"])]
    if task.get("intended_tools"):
        lines.append("intended tools: " + ", ".join(task["intended_tools"]))
    if task.get("expected_answer"):
        lines.append(f"expected answer: {task['expected_answer']}")
    return lines


def _step_lines(step: dict[str, Any]) -> list[str]:
    took = f" ({step['duration_ms']:.0f} ms)" if step.get("duration_ms") is not None else ""
    lines = [f"step {step['idx']}{took}", "  thought:", _indent(step.get("thought")), "  code:", _indent(step.get("code")),
             "  observation:", _indent(step.get("observation"))]
    for call in step.get("tool_calls") or []:
        err = f" ERROR {call['error']}" if call.get("error") else ""
        took = f" ({call['duration_ms']:.0f} ms)" if call.get("duration_ms") is not None else ""
        lines.append(f"  tool call {call['name']}({to_json(call.get('arguments'), indent=None)}){took}{err}")
        if call.get("result"):
            lines.append(_indent(call["result"], "      "))
    if step.get("error"):
        lines += ["  error:", _indent(step["error"])]
    for image in step.get("images") or []:
        lines.append(f"  image: {image}")
    return lines


def render_record(record: dict[str, Any]) -> str:
    """A record of :func:`mmat.store.records.find_record` as plain text, nothing cut."""
    if record["kind"] == "task":
        lines = _task_lines(record["task"]) + _file_lines(record["files"]) + _verdict_lines(record["verdicts"])
        trajs = record["trajectories"]
        lines.append("trajectories:" if trajs else "trajectories: none")
        for t in trajs:
            lines.append(f"  {t['traj_id']} attempt {t['attempt']} ({t['origin']}, {t['controller']}): {t['status']}, "
                         f"verdict {t['verdict'] or '-'}, {t['n_steps']} steps, {t['n_errors']} errors")
        return "\n".join(lines)
    t = record["trajectory"]
    lines = [f"trajectory {t['traj_id']} · attempt {t.get('attempt')} · {t.get('origin')} · controller {t.get('controller')}",
             f"status {t.get('status')} · verdict {t.get('verdict') or '-'} · {t.get('n_steps')} steps · "
             f"{t.get('n_errors')} errors"]
    lines += _task_lines(record["task"]) + _file_lines(record["files"])
    for step in record["steps"]:
        lines += _step_lines(step)
    lines += ["answer:", _indent(t.get("answer"))]
    lines += _verdict_lines(record["verdicts"])
    return "\n".join(lines)
