"""Human labels for the verifiers: a sheet out, a filled sheet (or any CSV/JSONL) back in.

``export_label_sheet`` writes one row per stored task or trajectory with what a person needs to judge
it (query, files, answer, each step's thought, code and observation, the verifier's own verdict) and empty ``label``/``note`` columns.
``import_labels`` reads rows of ``subject_kind, subject_id, label, note`` back into ``verdicts`` with
``verifier='label'``: the ground truth the verifier metrics compare against. Rows left unlabelled are
skipped; any bad row stops the import before anything is written, with every bad line named.
Importing a subject again replaces its label (the verdict ID is a hash of the subject).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from mmat.errors import ConfigError, StoreError
from mmat.ids import content_id
from mmat.store.runs import utcnow

__all__ = ["import_labels", "export_label_sheet", "LabelRow", "LABELS", "SHEET_COLUMNS", "read_label_file"]

LABELS: dict[str, bool] = {"correct": True, "incorrect": False, "pass": True, "reject": False}
KINDS = ("task", "trajectory")
SHEET_COLUMNS = ("subject_kind", "subject_id", "label", "note")
MAX_LISTED_PROBLEMS = 10

SubjectKind = Literal["task", "trajectory"]

# One step as a labeller reads it: thought, code, observation (and the error, images it made, when there are any).
_STEP_TEXT = (
    "'Step ' || (s.idx + 1) || chr(10) || 'Thought: ' || coalesce(s.thought, '') || chr(10) || 'Code:' || chr(10) "
    "|| coalesce(s.code, '') || chr(10) || 'Observation: ' || coalesce(s.observation, '') "
    "|| CASE WHEN s.error IS NOT NULL THEN chr(10) || 'Error: ' || s.error ELSE '' END "
    "|| CASE WHEN len(coalesce(s.images, [])) > 0 THEN chr(10) || 'Images made: ' || len(s.images) ELSE '' END"
)

# What a person sees next to each subject. Columns after the first four are context only: import ignores them.
_SHEETS: dict[str, str] = {
    "task": """
        SELECT 'task' AS subject_kind, t.task_id AS subject_id, l.verdict AS label,
               array_to_string(CAST(l.reasons AS VARCHAR[]), '; ') AS note,
               t.domain, t.status, t.query, array_to_string(t.intended_tools, ', ') AS intended_tools,
               t.expected_answer,
               (SELECT string_agg(f.name || ' (' || f.modality || ')', ', ' ORDER BY f.file_id)
                  FROM files f WHERE f.task_id = t.task_id) AS files,
               v.verdict AS verifier_verdict,
               array_to_string(CAST(v.reasons AS VARCHAR[]), '; ') AS verifier_reasons
        FROM tasks t
        LEFT JOIN verdicts l ON l.subject_id = t.task_id AND l.subject_kind = 'task' AND l.verifier = 'label'
        LEFT JOIN verdicts v ON v.subject_id = t.task_id AND v.subject_kind = 'task' AND v.verifier = 'query_file'
        WHERE t.query IS NOT NULL""",
    "trajectory": f"""
        SELECT 'trajectory' AS subject_kind, r.traj_id AS subject_id, l.verdict AS label,
               array_to_string(CAST(l.reasons AS VARCHAR[]), '; ') AS note,
               t.task_id, t.domain, t.query, t.expected_answer, r.answer, r.status, r.n_steps, r.n_errors,
               r.controller,
               (SELECT string_agg(f.name || ' (' || f.modality || ')', ', ' ORDER BY f.file_id)
                  FROM files f WHERE f.task_id = t.task_id) AS files,
               v.verdict AS verifier_verdict,
               array_to_string(CAST(v.reasons AS VARCHAR[]), '; ') AS verifier_reasons,
               (SELECT string_agg({_STEP_TEXT}, chr(10) || chr(10) ORDER BY s.idx)
                  FROM steps s WHERE s.traj_id = r.traj_id) AS steps
        FROM trajectories r JOIN tasks t USING (task_id)
        LEFT JOIN verdicts l ON l.subject_id = r.traj_id AND l.subject_kind = 'trajectory' AND l.verifier = 'label'
        LEFT JOIN verdicts v ON v.subject_id = r.traj_id AND v.subject_kind = 'trajectory' AND v.verifier = 'trajectory'""",
}
_SUBJECT_TABLES = {"task": ("tasks", "task_id"), "trajectory": ("trajectories", "traj_id")}


class LabelRow(BaseModel):
    """One valid label from a file."""

    line: int
    subject_kind: SubjectKind
    subject_id: str
    label: str
    note: str | None = None

    @property
    def passed(self) -> bool:
        return LABELS[self.label]


# --- reading -------------------------------------------------------------------------------------------------
def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, raw row) per row of a CSV or JSONL file; the CSV header is line 1."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("subject_kind", "subject_id", "label") if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path} line 1: the header lacks the column(s) {', '.join(missing)}; "
                                  f"a label file has the columns {', '.join(SHEET_COLUMNS)}")
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))
            return rows
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} line {n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(value, dict):
                raise ConfigError(f"{path} line {n}: expected a JSON object with {', '.join(SHEET_COLUMNS)}")
            rows.append((n, value))
        return rows
    raise ConfigError(f"{path}: label files are .csv or .jsonl; rename it or convert it")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_label_file(path: Path) -> list[LabelRow]:
    """Every labelled row of ``path``, validated; rows with an empty label are skipped.

    Raises ConfigError naming each bad line (unknown kind or label, missing ID, a subject labelled twice).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: pass the label sheet you filled in")
    problems: list[str] = []
    rows: list[LabelRow] = []
    first_line: dict[tuple[str, str], int] = {}
    for line, raw in _records(path):
        label = _text(raw.get("label")).lower()
        if not label:
            continue
        kind = _text(raw.get("subject_kind")).lower()
        subject_id = _text(raw.get("subject_id"))
        if kind not in KINDS:
            problems.append(f"line {line}: subject_kind {kind or '(empty)'!r} is not task or trajectory")
        elif not subject_id:
            problems.append(f"line {line}: subject_id is empty")
        elif label not in LABELS:
            problems.append(f"line {line}: label {label!r} is not one of {', '.join(LABELS)}")
        elif (kind, subject_id) in first_line:
            problems.append(f"line {line}: {kind} {subject_id} is labelled again (first on line {first_line[kind, subject_id]})")
        else:
            first_line[kind, subject_id] = line
            rows.append(LabelRow(line=line, subject_kind=kind, subject_id=subject_id, label=label,
                                 note=_text(raw.get("note")) or None))
    if problems:
        raise _problems(path, problems)
    return rows


def _problems(path: Path, problems: list[str]) -> ConfigError:
    listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
    return ConfigError(f"{path}: nothing imported, fix these rows first: {listed}{more}")


# --- import --------------------------------------------------------------------------------------------------
def _unknown_subjects(store: Any, rows: list[LabelRow]) -> list[str]:
    problems: list[tuple[int, str]] = []
    for kind in KINDS:
        ids = sorted({r.subject_id for r in rows if r.subject_kind == kind})
        if not ids:
            continue
        table, column = _SUBJECT_TABLES[kind]
        found = {r[column] for r in store.sql(f"SELECT {column} FROM {table} WHERE {column} IN (SELECT unnest(?))", [ids])}
        problems += [(r.line, f"line {r.line}: no {kind} {r.subject_id} in the store") for r in rows
                     if r.subject_kind == kind and r.subject_id not in found]
    return [message for _, message in sorted(problems)]


def import_labels(store: Any, path: Path) -> int:
    """Write the labels in ``path`` (CSV or JSONL) into ``verdicts``; returns how many were imported.

    All rows are checked first (format, labels, duplicates, and that each subject exists); one bad row
    means nothing is written.
    """
    path = Path(path)
    rows = read_label_file(path)
    problems = _unknown_subjects(store, rows)
    if problems:
        raise _problems(path, problems)
    now = utcnow()
    verdicts = [{
        "verdict_id": content_id("verdict", "label", r.subject_kind, r.subject_id), "subject_kind": r.subject_kind,
        "subject_id": r.subject_id, "verifier": "label", "model": None, "passed": r.passed, "verdict": r.label,
        "score": 1.0 if r.passed else 0.0, "reasons": [r.note] if r.note else [], "rewritten_query": None,
        "created_at": now,
    } for r in rows]
    if verdicts:
        store.writer.put("verdicts", verdicts)
        store.writer.flush()
    return len(verdicts)


# --- export --------------------------------------------------------------------------------------------------
def export_label_sheet(store: Any, path: Path, kind: SubjectKind, where: str | None = None) -> int:
    """Write a CSV (or JSONL, by suffix) of stored tasks or trajectories for a person to label; returns rows written.

    ``where`` filters on the sheet's own columns, e.g. ``"status = 'solved'"`` or ``"verifier_verdict = 'correct'"``.
    Subjects already labelled come with their label and note filled in.
    """
    if kind not in _SHEETS:
        raise ConfigError(f"cannot export a label sheet of {kind!r}: choose task or trajectory")
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"{path}: write the label sheet as .csv or .jsonl")
    query = f"SELECT * FROM ({_SHEETS[kind]}) AS sheet"
    if where:
        query += f" WHERE {where}"
    query += " ORDER BY subject_id"
    try:
        rows = store.sql(query)
    except StoreError as e:
        raise ConfigError(f"the label-sheet filter {where!r} failed ({e}); it filters on the sheet's columns") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return len(rows)
    columns = list(rows[0]) if rows else list(SHEET_COLUMNS)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return len(rows)
