"""Object <-> row mapping of what runs produce, and the cleanups that keep resume exact.

- **Rows**: one seed's ``SeedResult`` (tasks, files, verdicts, trajectories, steps), one trajectory of
  an eval sample or a preference walk, and verdict rows, collected in a :class:`RowBatch` and written
  with :func:`write_batch`. IDs are content hashes of what made the row (run, seed, spec position,
  attempt), so redoing a seed after an interruption rewrites the same keys instead of adding new ones.
- **Per-seed tables** (:data:`SEED_TABLES`) and the cleanups a rerun does first:
  :func:`delete_partial_seeds` (synth seeds without their done marker) and :func:`delete_unfinished_walks`
  (prefs walks and pairs of tasks without theirs).
- **Seed-level LM calls** (query generation, made before any task id exists) get the seed's first task
  when the seed is written (:func:`attribute_seed_calls`).

The program result types are read, never imported at run time: the store sits below the programs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmat.ids import content_id, task_id_for, traj_id_for
from mmat.store.reasons import reason_code
from mmat.store.runs import utcnow

if TYPE_CHECKING:
    import numpy as np

    from mmat.programs.rules import ExpectedAnswerCheck, RuleVerdict
    from mmat.programs.synthesis import SeedResult, TaskResult, TrajectoryResult
    from mmat.store.db import Store

__all__ = [
    "seed_rows", "trajectory_rows", "task_verdict_rows", "trajectory_verdict_rows", "rules_row", "expected_answer_row",
    "task_id_for", "RowBatch", "write_batch", "SEED_TABLES", "delete_partial_seeds", "delete_unfinished_walks",
    "attribute_seed_calls",
]

# Tables a seed writes, children first: deleting a half-written seed goes in this order. Each entry says
# which of the seed's rows it holds; every nested select takes (run_id, seed_idx).
_SEED_TASKS = "SELECT task_id FROM tasks WHERE run_id = ? AND seed_idx = ?"
_SEED_TRAJS = f"SELECT traj_id FROM trajectories WHERE task_id IN ({_SEED_TASKS})"
_SEED_ROWS = {
    "steps": f"traj_id IN ({_SEED_TRAJS})",
    "verdicts": f"subject_id IN ({_SEED_TRAJS}) OR subject_id IN ({_SEED_TASKS})",
    "files": f"task_id IN ({_SEED_TASKS})",
    "trajectories": f"task_id IN ({_SEED_TASKS})",
    "query_embeddings": f"task_id IN ({_SEED_TASKS})",
    "tasks": "run_id = ? AND seed_idx = ?",
}
SEED_TABLES = tuple(_SEED_ROWS)


def _task_row(run_id: str, result: SeedResult, task_id: str, split: str, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id, "run_id": run_id, "seed_idx": result.seed.index, "split": split,
        "domain": result.seed.domain.name, "created_at": utcnow(), "multimodal": False,
        "reason_code": reason_code(fields.get("status"), fields.get("status_reason")), **fields,
    }


def tools_used(traj) -> list[str]:
    """The tools a trajectory's code called, in order of first call."""
    return list(dict.fromkeys(c.name for step in traj.steps for c in step.tool_calls))


def _rejected_spec_rows(run_id: str, result: SeedResult, split: str) -> list[dict[str, Any]]:
    """Specs dropped before any file was made (bad tool names, near-duplicates, contamination)."""
    rejected = list(result.queries.rejected if result.queries else []) + list(result.duplicates)
    return [
        _task_row(run_id, result, task_id_for(run_id, result.seed.index, ("rejected", r.query)), split,
                  query=r.query, original_query=r.query, status="rejected", status_reason=r.reason)
        for r in rejected
    ]


class RowBatch:
    """Rows per table that are written together (a seed, an eval sample, a walk); blobs are stored as they
    are met (idempotent, content-addressed)."""

    def __init__(self, put_blob: Callable[[Path], tuple[str, str]]):
        self.tables: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.put_blob = put_blob
        self.counts: Counter[str] = Counter()

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables[table].append(row)


def _file_rows(rows: RowBatch, task_id: str, task: TaskResult) -> None:
    for i, f in enumerate(task.files.files):
        rel, sha = rows.put_blob(Path(f.path))
        rows.add("files", {
            "file_id": content_id(task_id, "file", i), "task_id": task_id, "position": i, "name": f.name, "path": rel,
            "sha256": sha, "modality": f.modality, "mime": f.mime, "bytes": Path(f.path).stat().st_size,
            "source": f.source, "caption": f.caption or None, "created_at": utcnow(),
        })


def _verdict_id(*parts: Any, salt: str | None) -> str:
    """Synth rows keep one id per subject (a redone seed rewrites them); ``mmat verify`` salts with its run id,
    so its rows are new and the old ones stay."""
    return content_id("verdict", *parts, *([salt] if salt else []))


def rules_row(kind: str, subject_id: str, rules: RuleVerdict, *, salt: str | None = None) -> dict[str, Any]:
    """The rule checks' verdict on one subject (format: mmat.programs.rules): one row, every failed check's reason."""
    return {
        "verdict_id": _verdict_id("rules", kind, subject_id, salt=salt), "subject_kind": kind,
        "subject_id": subject_id, "verifier": "rules", "model": None, "passed": rules.passed,
        "verdict": "pass" if rules.passed else "reject", "score": None, "reasons": rules.reasons, "created_at": utcnow(),
    }


def expected_answer_row(traj_id: str, check: ExpectedAnswerCheck, *, salt: str | None = None) -> dict[str, Any]:
    """The verifiable check: the answer against the expected one under GAIA's scorer (exact result)."""
    return {
        "verdict_id": _verdict_id("expected_answer", traj_id, salt=salt), "subject_kind": "trajectory",
        "subject_id": traj_id, "verifier": "expected_answer", "model": check.scorer, "passed": check.exact,
        "verdict": "match" if check.exact else "mismatch", "score": float(check.exact), "reasons": [check.reason],
        "created_at": utcnow(),
    }


def task_verdict_rows(task_id: str, task: TaskResult, model: str | None, *, salt: str | None = None) -> list[dict[str, Any]]:
    """The rules row and the query-file verifier's row (when it was asked) of one task."""
    out = [rules_row("task", task_id, task.rules, salt=salt)] if task.rules is not None else []
    v = task.query_verdict
    if v is not None:
        out.append({
            "verdict_id": _verdict_id("task", task_id, salt=salt), "subject_kind": "task", "subject_id": task_id,
            "verifier": "query_file", "model": model, "passed": v.passed,
            "verdict": "pass" if v.passed else "reject", "score": None, "reasons": v.reasons,
            "rewritten_query": v.rewritten_query, "created_at": utcnow(),
        })
    return out


def trajectory_verdict_rows(traj_id: str, run: TrajectoryResult, model: str | None, *,
                            salt: str | None = None) -> list[dict[str, Any]]:
    """The LM verifier's row (or its unreadable reply), the rules row and the expected-answer row of one trajectory."""
    out = []
    verdict = run.verdict
    if verdict is not None or run.verdict_error:
        out.append({
            "verdict_id": _verdict_id("trajectory", traj_id, salt=salt), "subject_kind": "trajectory",
            "subject_id": traj_id, "verifier": "trajectory", "model": model,
            "passed": verdict.passed if verdict else None, "verdict": verdict.verdict if verdict else "unreadable",
            "score": verdict.score if verdict else None,
            "reasons": verdict.reasons if verdict else [run.verdict_error], "created_at": utcnow(),
        })
    if run.rules is not None:
        out.append(rules_row("trajectory", traj_id, run.rules, salt=salt))
    if run.expected is not None:
        out.append(expected_answer_row(traj_id, run.expected, salt=salt))
    return out


def trajectory_rows(
    rows: RowBatch, run_id: str, task_id: str, run: TrajectoryResult, workspace: Path, verifier: str | None, *,
    traj_id: str | None = None, origin: str = "synth",
) -> str:
    """Rows of one trajectory (its steps, step images as blobs, its verdict); returns the traj_id.

    ``origin``: ``synth`` for an agent attempt (id from task, attempt and controller), ``eval`` for an
    evaluation sample, ``prefs`` for the path a preference walk took (its runner names the id)."""
    traj = run.trajectory
    traj_id = traj_id or traj_id_for(task_id, run.attempt, run.controller)
    rows.add("trajectories", {
        "traj_id": traj_id, "task_id": task_id, "run_id": run_id, "attempt": run.attempt,
        "controller": run.controller, "answer": traj.answer, "status": traj.status,
        "verdict": run.verdict_label, "n_steps": len(traj.steps), "n_errors": traj.n_errors,
        "tools": list(traj.tools), "tools_offered": list(traj.tools), "tools_used": tools_used(traj),
        "multimodal": traj.multimodal, "origin": origin, "created_at": utcnow(),
    })
    for step in traj.steps:
        images = []
        for image in step.images:
            path = Path(image) if Path(image).is_absolute() else workspace / image
            if path.is_file():
                images.append(rows.put_blob(path)[0])
        rows.add("steps", {
            "traj_id": traj_id, "idx": step.idx, "thought": step.thought, "code": step.code,
            "observation": step.observation, "error": step.error, "images": images,
            "duration_ms": step.duration_ms,
            "tool_calls": [
                {"name": c.name, "arguments": c.arguments, "result": c.result, "duration_ms": c.duration_ms, "error": c.error}
                for c in step.tool_calls
            ],
        })
    for row in trajectory_verdict_rows(traj_id, run, verifier):
        rows.add("verdicts", row)
    rows.counts["trajectories"] += 1
    rows.counts["trajectories_correct"] += int(run.correct)
    rows.counts["trajectories_rejected_by_rules"] += int(run.rejected_by_rules)
    rows.counts["trajectories_rejected_by_verifier"] += int(run.verdict is not None and not run.verdict.passed)
    return traj_id


def seed_rows(
    run_id: str,
    result: SeedResult,
    *,
    split: str,
    put_blob: Callable[[Path], tuple[str, str]],
    embeddings: dict[str, "np.ndarray"],
    verifier: str,
) -> RowBatch:
    """All rows one seed produced. ``embeddings`` maps an accepted query to its vector (dedup index)."""
    rows = RowBatch(put_blob)
    for row in _rejected_spec_rows(run_id, result, split):
        rows.add("tasks", row)
    for task in result.tasks:
        task_id = task_id_for(run_id, result.seed.index, task.spec_index)
        spec = task.spec
        rows.add("tasks", _task_row(
            run_id, result, task_id, split, query=task.query, original_query=spec.query,
            intended_tools=list(spec.intended_tools), file_needs=[n.model_dump(mode="json") for n in spec.file_needs],
            answer_type=getattr(spec, "expected_answer_type", None), expected_answer=spec.expected_answer,
            status=task.status, status_reason=task.status_reason,
            multimodal=any(f.is_image for f in task.files.files),
        ))
        rows.counts["generated"] += 1
        if spec.query in embeddings:
            rows.add("query_embeddings", {"task_id": task_id, "embedding": [float(x) for x in embeddings[spec.query]]})
        _file_rows(rows, task_id, task)
        if task.files.ok:
            rows.counts["files_ok"] += 1
        for row in task_verdict_rows(task_id, task, verifier):
            rows.add("verdicts", row)
        rows.counts["tasks_rejected_by_rules"] += int(task.rules is not None and not task.rules.passed)
        for run in task.trajectories:
            trajectory_rows(rows, run_id, task_id, run, task.workspace / f"traj_{run.attempt}", verifier)
    # A model may repeat a rejected query word for word: one task row (the store upserts by id), one count.
    unique = {row["task_id"]: row for row in rows.tables["tasks"]}
    rows.tables["tasks"] = list(unique.values())
    rows.counts.update(row["status"] for row in unique.values())
    return rows


def write_batch(store: Store, batch: RowBatch | dict[str, list[dict[str, Any]]], *, flush: bool = True) -> None:
    """Hand every table of ``batch`` to the store's writer (and flush: the rows are committed on return)."""
    tables = batch.tables if isinstance(batch, RowBatch) else batch
    for table, table_rows in tables.items():
        if table_rows:
            store.writer.put(table, table_rows)
    if flush:
        store.writer.flush()


def delete_partial_seeds(store: Store, run_id: str, done: set[int]) -> list[int]:
    """Delete the rows of this run's seeds that started but never got their 'done' marker (a kill mid-seed);
    returns their indexes. Their LM calls stay: they were made and paid for."""
    partial = [r["seed_idx"] for r in store.sql(
        "SELECT DISTINCT seed_idx FROM tasks WHERE run_id = ?", [run_id]) if r["seed_idx"] not in done]
    for seed_idx in partial:
        for table, where in _SEED_ROWS.items():
            store.writer.execute(f"DELETE FROM {table} WHERE {where}", [run_id, seed_idx] * (where.count("?") // 2))
    if partial:
        store.writer.flush()
    return partial


def finished_query_embeddings(store: Store) -> list[list[float]]:
    """The query vectors of every seed marked done, in any run: what a new query is checked against for
    near-duplicates. A seed a kill left without its done marker is not among them: its rows are deleted when
    its run resumes, and its queries, made again, must not count as duplicates of themselves."""
    return store.sql_arrow(
        "SELECT e.embedding FROM query_embeddings e JOIN tasks k USING (task_id) "
        "JOIN synth_seeds s ON s.run_id = k.run_id AND s.seed_idx = k.seed_idx WHERE s.status = 'done'"
    ).column("embedding").to_pylist()


def delete_unfinished_walks(store: Store, run_id: str) -> None:
    """Delete this prefs run's walks (trajectories, steps) and pairs of tasks a kill or a failure left without
    their done mark in ``prefs_tasks``."""
    unfinished = "task_id NOT IN (SELECT task_id FROM prefs_tasks WHERE run_id = ? AND status = 'done')"
    walks = f"SELECT traj_id FROM trajectories WHERE run_id = ? AND origin = 'prefs' AND {unfinished}"
    store.writer.execute(f"DELETE FROM preference_pairs WHERE run_id = ? AND {unfinished}", [run_id, run_id])
    store.writer.execute(f"DELETE FROM steps WHERE traj_id IN ({walks})", [run_id, run_id])
    store.writer.execute(f"DELETE FROM trajectories WHERE traj_id IN ({walks})", [run_id, run_id])
    store.writer.flush()


def attribute_seed_calls(store: Store, run_id: str, seed_idx: int) -> None:
    """Give the seed's seed-level LM calls (``seed_call``: query generation) still without a task the task_id
    of the seed's first task (the smallest task_id, a stable choice); queued after the seed's rows, so it runs
    once they are written. A seed that stored no task keeps its calls' task_id NULL."""
    store.writer.execute(
        "UPDATE lm_calls SET task_id = (SELECT min(task_id) FROM tasks WHERE run_id = ? AND seed_idx = ?) "
        "WHERE run_id = ? AND seed_idx = ? AND seed_call AND task_id IS NULL", [run_id, seed_idx, run_id, seed_idx])
