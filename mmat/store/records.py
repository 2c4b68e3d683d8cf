"""One task or trajectory with everything stored about it, for ``mmat show`` and the viewer.

:func:`find_record` takes a full id or a unique prefix of a ``traj_id`` or ``task_id`` and returns a
plain dict (JSON columns decoded, blob paths made absolute). It reads through :func:`read_sql`, so it
works while a job writes the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmat.config import Settings
from mmat.errors import StoreError
from mmat.store.read import db_path_of, read_sql
from mmat.store.readonly import table_rows

__all__ = ["find_record"]

_MATCHES_SHOWN = 5


def _rows(db: Path, query: str, params: list[Any]) -> list[dict[str, Any]]:
    return table_rows(read_sql(db, query, params))


def _resolve(db: Path, ident: str) -> tuple[str, str]:
    """(kind, full id) for an id or unique id prefix of a trajectory or a task."""
    ident = ident.strip()
    if not ident:
        raise StoreError("give a trajectory or task id (or a unique prefix): mmat show 3f2a9c")
    found = _rows(db, """
        SELECT 'trajectory' AS kind, traj_id AS id FROM trajectories WHERE starts_with(traj_id, ?)
        UNION ALL SELECT 'task', task_id FROM tasks WHERE starts_with(task_id, ?)
        ORDER BY 1, 2 LIMIT 20""", [ident, ident])
    exact = [r for r in found if r["id"] == ident]
    if exact:
        found = exact[:1]
    if not found:
        raise StoreError(f"no trajectory or task id starts with {ident!r}: list some with "
                         "mmat sql \"select traj_id, task_id, verdict from trajectories limit 10\"")
    if len(found) > 1:
        shown = ", ".join(f"{r['kind']} {r['id']}" for r in found[:_MATCHES_SHOWN])
        raise StoreError(f"{ident!r} matches {len(found)}{'+' if len(found) == 20 else ''} ids ({shown}, ...): "
                         "give more characters")
    return found[0]["kind"], found[0]["id"]


def _files(db: Path, task_id: str) -> list[dict[str, Any]]:
    files = _rows(db, "SELECT name, modality, mime, bytes, source, caption, path, sha256 FROM files "
                      "WHERE task_id = ? ORDER BY position NULLS LAST, name", [task_id])
    for f in files:
        f["path"] = str(db.parent / "blobs" / f["path"]) if f["path"] else None
    return files


def _verdicts(db: Path, kind: str, subject_id: str) -> list[dict[str, Any]]:
    return _rows(db, "SELECT verifier, model, passed, verdict, score, reasons, rewritten_query, created_at "
                     "FROM verdicts WHERE subject_kind = ? AND subject_id = ? ORDER BY created_at", [kind, subject_id])


def _task(db: Path, task_id: str) -> dict[str, Any] | None:
    rows = _rows(db, "SELECT * FROM tasks WHERE task_id = ?", [task_id])
    return rows[0] if rows else None


def _task_record(db: Path, task_id: str) -> dict[str, Any]:
    return {
        "kind": "task",
        "task": _task(db, task_id),
        "files": _files(db, task_id),
        "verdicts": _verdicts(db, "task", task_id),
        "trajectories": _rows(db, "SELECT traj_id, attempt, controller, origin, status, verdict, n_steps, n_errors, "
                                  "answer FROM trajectories WHERE task_id = ? ORDER BY origin, attempt, traj_id",
                              [task_id]),
    }


def _trajectory_record(db: Path, traj_id: str) -> dict[str, Any]:
    traj = _rows(db, "SELECT * FROM trajectories WHERE traj_id = ?", [traj_id])[0]
    steps = _rows(db, "SELECT * EXCLUDE (traj_id) FROM steps WHERE traj_id = ? ORDER BY idx", [traj_id])
    for step in steps:
        step["images"] = [str(db.parent / "blobs" / p) for p in step.get("images") or []]
    task_id = traj.get("task_id")
    return {
        "kind": "trajectory",
        "trajectory": traj,
        "task": _task(db, task_id) if task_id else None,
        "files": _files(db, task_id) if task_id else [],
        "steps": steps,
        "verdicts": _verdicts(db, "trajectory", traj_id),
    }


def find_record(where: Settings | Path | str, ident: str) -> dict[str, Any]:
    """The task or trajectory ``ident`` names (full id or unique prefix), in full."""
    db = db_path_of(where)
    kind, full_id = _resolve(db, ident)
    return _trajectory_record(db, full_id) if kind == "trajectory" else _task_record(db, full_id)
