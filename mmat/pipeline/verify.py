"""`mmat verify`: run verification again on stored tasks and trajectories.

The same flow as synthesis (``Synthesis.verify_task`` / ``verify_trajectory``): rule checks first, the
verifier model only for what passes them (none with ``rules_only``). Results are *new* verdict rows,
their ids salted with this run's id, so earlier verdicts stay; no trajectory, step or task row is
changed. The newest verdict of a subject is the one with the latest ``created_at``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mmat.config import Settings
from mmat.errors import ConfigError

__all__ = ["VerifyRequest", "VerifySummary", "run_verify", "DEFAULT_VERIFY_WHERE"]

DEFAULT_VERIFY_WHERE = "t.origin = 'synth'"
_COLUMNS = "t.* (trajectories; NULL for a task without trajectories), k.* (tasks)"


class VerifyRequest(BaseModel):
    """What `mmat verify` re-verifies (a SQL filter over t and k) and how (rules only, or rules then the verifier
    model)."""
    where: str = DEFAULT_VERIFY_WHERE
    rules_only: bool = False


class VerifySummary(BaseModel):
    run_id: str
    verifier: str | None
    tasks: int
    trajectories: int
    counts: dict[str, int]
    rule_failures: dict[str, int]
    seconds: float

    def render(self) -> str:
        c = Counter(self.counts)
        top = ", ".join(f"{name} {n}" for name, n in Counter(self.rule_failures).most_common(5))
        line = (f"verify {self.run_id}: {self.tasks} task(s), {self.trajectories} trajectory(ies) in {self.seconds:.1f}s — "
                f"rules rejected {c['tasks_rejected_by_rules']} task(s) and {c['trajectories_rejected_by_rules']} "
                f"trajectory(ies)" + (f" ({top})" if top else ""))
        if self.verifier is None:
            line += "; rules only, no model asked"
        else:
            line += (f"; {self.verifier}: {c['tasks_rejected_by_verifier']} task(s) rejected, "
                     f"{c['trajectories_correct']} trajectory(ies) correct, {c['trajectories_rejected_by_verifier']} "
                     f"incorrect, {c['unreadable']} unreadable")
        return line + ("\nnew verdict rows only, trajectories unchanged: mmat sql \"select verifier, passed, count(*) from verdicts "
                       f"where created_at >= (select started_at from runs where run_id = '{self.run_id}') group by all\"")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _select(store, where: str) -> list[dict[str, Any]]:
    from mmat.pipeline.training_data import user_selection

    return user_selection(
        store,
        "SELECT k.task_id, k.query, k.original_query, k.intended_tools, k.file_needs, k.answer_type, k.expected_answer, "
        "t.traj_id, t.attempt, t.controller, t.answer, t.status AS traj_status, t.n_errors, t.tools, t.multimodal "
        f"FROM tasks k LEFT JOIN trajectories t USING (task_id) WHERE {where} ORDER BY k.task_id, t.traj_id",
        flag="--where", columns=_COLUMNS,
    )


def _task(store, row: dict[str, Any]):
    """A stored task as the TaskResult the verification flow takes (stored values are not re-validated:
    imported or older rows may not fit today's QuerySpec bounds, and the rules judge them as they are)."""
    from mmat.pipeline.training_data import load_files
    from mmat.programs.file_generator import FileGenResult
    from mmat.programs.synthesis import TaskResult
    from mmat.signatures.queries import QuerySpec

    spec = QuerySpec.model_construct(
        query=row["original_query"] or row["query"] or "", intended_tools=list(row["intended_tools"] or []),
        file_needs=_json(row["file_needs"]) or [], expected_answer_type=row["answer_type"],
        expected_answer=row["expected_answer"])
    return TaskResult.model_construct(
        spec_index=0, spec=spec, query=row["query"] or spec.query, workspace=Path("."),
        files=FileGenResult(files=load_files(store, row["task_id"])), rules=None, query_verdict=None, trajectories=[],
        status="verified", status_reason=None)


def _trajectory_run(store, row: dict[str, Any]):
    from mmat.pipeline.training_data import load_steps
    from mmat.programs.synthesis import TrajectoryResult
    from mmat.programs.trajectory import Trajectory

    trajectory = Trajectory.model_construct(
        steps=load_steps(store, row["traj_id"]), answer=row["answer"], status=row["traj_status"],
        n_errors=row["n_errors"] or 0, tools=list(row["tools"] or []), multimodal=bool(row["multimodal"]))
    return TrajectoryResult(attempt=row["attempt"] or 0, controller=row["controller"] or "", trajectory=trajectory)


def run_verify(settings: Settings, request: VerifyRequest, *, command: str = "mmat verify",
               progress: bool = True) -> VerifySummary:
    """Re-run the rule checks (and the verifier model unless rules-only) on stored tasks and trajectories; adds
    verdict rows, changes no other row."""
    import dspy

    from mmat.lm import check_model, configure_litellm
    from mmat.programs.synthesis import Synthesis
    from mmat.store import open_store
    from mmat.store import LMCallRecorder, run_lifecycle
    from mmat.store.rows import task_verdict_rows, trajectory_verdict_rows
    from mmat.tools.registry import REGISTRY

    started = time.monotonic()
    model = None if request.rules_only else settings.verifier_model
    if model is not None:
        configure_litellm(settings)
        check_model(model, settings)
    program = Synthesis(None, settings=settings, tools=[])

    with open_store(settings) as store:
        rows = _select(store, request.where)
        if not rows:
            raise ConfigError(f"nothing matches --where {request.where!r}; columns: {_COLUMNS}")
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row["task_id"], []).append(row)
        with run_lifecycle(store, "verify", settings, command, progress=progress) as run:
            run_id = run.run_id
            recorder = LMCallRecorder(store, run_id)
            counts: Counter[str] = Counter()
            failures: Counter[str] = Counter()

            def verify(task_rows: list[dict[str, Any]]):
                task = _task(store, task_rows[0])
                # the task's run offered its agent these tools: every registered one, and any its trajectories list
                tools = sorted({*REGISTRY, *(t for r in task_rows for t in (r["tools"] or []))})
                with dspy.context(callbacks=[recorder]):
                    program.verify_task(task, tools, use_lm=model is not None)
                    runs = [(r["traj_id"], program.verify_trajectory(task, _trajectory_run(store, r), None, use_lm=model is not None))
                            for r in task_rows if r["traj_id"] is not None]
                return task_rows[0]["task_id"], task, runs

            n_traj = sum(1 for r in rows if r["traj_id"] is not None)
            with run.progress("verify", len(groups)) as bar, ThreadPoolExecutor(settings.concurrency) as pool:
                for task_id, task, runs in pool.map(verify, groups.values()):
                    out = task_verdict_rows(task_id, task, model, salt=run_id)
                    counts["tasks_rejected_by_rules"] += int(not task.rules.passed)
                    counts["tasks_rejected_by_verifier"] += int(task.query_verdict is not None and not task.query_verdict.passed)
                    failures.update(f.check for f in task.rules.failures)
                    for traj_id, attempt in runs:
                        out += trajectory_verdict_rows(traj_id, attempt, model, salt=run_id)
                        counts["trajectories_rejected_by_rules"] += int(attempt.rejected_by_rules)
                        counts["trajectories_correct"] += int(attempt.correct)
                        counts["trajectories_rejected_by_verifier"] += int(attempt.verdict is not None
                                                                           and not attempt.verdict.passed)
                        counts["unreadable"] += int(attempt.verdict_error is not None)
                        failures.update(f.check for f in attempt.rules.failures)
                    store.writer.put("verdicts", out)
                    store.writer.flush()
                    bar.advance(f"rules rejected {counts['tasks_rejected_by_rules'] + counts['trajectories_rejected_by_rules']}")

            summary = VerifySummary(run_id=run_id, verifier=model, tasks=len(groups), trajectories=n_traj, counts=dict(counts),
                                    rule_failures=dict(failures), seconds=time.monotonic() - started)
            run.summary = summary.model_dump(mode="json")
    return summary
