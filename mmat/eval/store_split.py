"""Load mmat's own held-out tasks (``tasks.split = 'eval'``) from the store as EvalItems.

The task's intended tools are the gold tool calls (order as generated) and its expected answer is scored
with the GAIA normalised rule. Files come from the content-addressed blob store under the names the task
gave them. Tasks the query-file verifier rejected are skipped: they are not fair questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mmat.eval.items import EvalItem, LoadReport, SkippedItem

__all__ = ["load_store_split"]


class _StoreLike(Protocol):
    def sql(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]: ...

    def blob_path(self, rel: str) -> Path: ...


_TASKS = """
SELECT task_id, query, intended_tools, expected_answer, status, status_reason
FROM tasks WHERE split = ? ORDER BY task_id
"""
_FILES = """
SELECT f.task_id, f.name, f.path FROM files f JOIN tasks t USING (task_id)
WHERE t.split = ? ORDER BY f.task_id, f.created_at, f.name
"""


def load_store_split(store: _StoreLike, split: str = "eval") -> LoadReport:
    """Every task of ``split`` as an EvalItem; unusable tasks are reported in ``skipped``."""
    report = LoadReport(source=f"store split '{split}'")
    files_by_task: dict[str, list[dict[str, Any]]] = {}
    for row in store.sql(_FILES, [split]):
        files_by_task.setdefault(row["task_id"], []).append(row)
    for task in store.sql(_TASKS, [split]):
        key = task["task_id"]
        item_or_reason = _item(task, files_by_task.get(key, []), store)
        if isinstance(item_or_reason, EvalItem):
            report.items.append(item_or_reason)
        else:
            report.skipped.append(SkippedItem(key=key, reason=item_or_reason))
    return report


def _item(task: dict[str, Any], file_rows: list[dict[str, Any]], store: _StoreLike) -> EvalItem | str:
    if task.get("status") == "rejected":
        return f"rejected by the verifier: {task.get('status_reason') or 'no reason recorded'}"
    query = task.get("query")
    if not isinstance(query, str) or not query.strip():
        return "task has no query text"
    paths: list[Path] = []
    names: list[str] = []
    for row in file_rows:
        path = store.blob_path(row["path"])
        if not path.is_file():
            return f"file {row['name']!r} is missing from the blob store ({path})"
        paths.append(path)
        names.append(row["name"] or path.name)
    expected = task.get("expected_answer")
    has_answer = isinstance(expected, str) and bool(expected.strip())
    intended = task.get("intended_tools")
    return EvalItem(
        key=task["task_id"],
        question=query,
        files=paths,
        file_names=names,
        gold_tool_calls=list(intended or []),
        tool_gold_known=intended is not None,
        gt=expected if has_answer else None,
        answer_kind="gaia" if has_answer else "none",
    )
