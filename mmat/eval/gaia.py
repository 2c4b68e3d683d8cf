"""Load a GAIA-format benchmark (``metadata.jsonl``) into EvalItems.

Each line is ``{task_id, Question, Level, "Final answer", file_name}``; ``file_name`` is relative to the
jsonl's directory (empty: no file). GAIA has no reference tool calls, so ToolAcc is not computed for it.
The test split hides its answers ("?"): such items load with answer_kind "none" and are not counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.eval.items import EvalItem, LoadReport, SkippedItem

__all__ = ["load_gaia"]

HIDDEN_ANSWERS = frozenset({"", "?"})  # GAIA's test split publishes "?" in place of the answer


def load_gaia(path: Path | str, *, data_dir: Path | str | None = None) -> LoadReport:
    """Read a GAIA metadata.jsonl; attached files resolve against ``data_dir`` (default: the file's directory)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark file {path} does not exist: point at GAIA's metadata.jsonl.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"benchmark file {path} is not UTF-8 text ({e}): point at GAIA's metadata.jsonl.") from None
    base = Path(data_dir) if data_dir is not None else path.parent
    report = LoadReport(source=str(path))
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            report.skipped.append(SkippedItem(key=f"line {lineno}", reason=f"not valid JSON ({e})"))
            continue
        key, reason = _key(row, lineno)
        if reason is None and key in seen:
            reason = "duplicate task_id"
        if reason is None:
            item_or_reason = _parse_row(key, row, base)
            if isinstance(item_or_reason, EvalItem):
                seen.add(key)
                report.items.append(item_or_reason)
                continue
            reason = item_or_reason
        report.skipped.append(SkippedItem(key=key, reason=reason))
    if not report.items and not report.skipped:
        raise ConfigError(f"benchmark file {path} holds no items: is it GAIA's metadata.jsonl?")
    return report


def _key(row: Any, lineno: int) -> tuple[str, str | None]:
    if not isinstance(row, dict):
        return f"line {lineno}", f"line is a {type(row).__name__}, not an object"
    task_id = row.get("task_id")
    if not isinstance(task_id, str) or not task_id.strip():
        return f"line {lineno}", "no task_id"
    return task_id, None


def _parse_row(key: str, row: dict[str, Any], base: Path) -> EvalItem | str:
    question = row.get("Question")
    if not isinstance(question, str) or not question.strip():
        return "no Question text"
    level = row.get("Level")
    if isinstance(level, bool) or not isinstance(level, (str, int, type(None))):
        return f"Level {level!r} is neither text nor a number"
    answer = row.get("Final answer")
    if answer is not None and not isinstance(answer, (str, int, float)):
        return f"Final answer {answer!r} is not text"
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = json.dumps(answer)
    files: list[Path] = []
    file_name = row.get("file_name") or ""
    if not isinstance(file_name, str):
        return f"file_name {file_name!r} is not text"
    if file_name:
        resolved = (base / file_name).resolve()
        if not resolved.is_file():
            return f"file not found: {resolved} (pass the directory holding GAIA's files as data_dir)"
        files.append(resolved)
    hidden = answer is None or answer.strip() in HIDDEN_ANSWERS
    return EvalItem(
        key=key,
        question=question,
        files=files,
        tool_gold_known=False,
        gt=None if hidden else answer,
        level=None if level is None else str(level),
        answer_kind="none" if hidden else "gaia",
    )
