"""`mmat prefs`: step-level preference pairs (MATRIX Pref-X style) from selected tasks.

For each selected task (default: tasks with a verified-correct trajectory, whose tool list it reuses),
PreferenceWalk solves it again: at every state the controller proposes k candidate steps, each runs in
an isolated fork of the sandbox, the judge scores them, ``preference_pairs`` keeps (chosen, rejected)
pairs by rule (error, format, score margin), and the walk goes on with the winner. While the walk
follows the task's verified trajectory, that trajectory's step is one more candidate (``reference``;
a weak controller still meets a good step, a strong one can leave the path). The walk is stored
as a trajectory (``origin = 'prefs'``), and each pair names it with ``traj_id`` + ``step_idx``: the
context of a pair is that trajectory's steps before the index, so step-DPO rebuilds the prompt exactly.

Resume: a task is marked done in ``prefs_tasks`` after its walk and pairs are flushed; a rerun skips
it, and first deletes this run's walks and pairs of tasks that never got the mark.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from mmat.config import Settings
from mmat.errors import ConfigError, ModelOutputError, SandboxError
from mmat.ids import content_id
from mmat.signatures.prefs import MAX_CANDIDATES
from mmat.store.runs import utcnow

__all__ = ["PrefsRequest", "PrefsSummary", "run_prefs", "DEFAULT_PREFS_WHERE"]

# Tasks solved in synthesis, through their verified-correct trajectory (the walk reuses its tool list).
DEFAULT_PREFS_WHERE = "t.verdict = 'correct' AND k.status = 'solved'"


class PrefsRequest(BaseModel):
    """What `mmat prefs` walks (a SQL filter over the stored tasks) and how: candidates per state, temperature,
    margin, reference steps."""

    where: str = DEFAULT_PREFS_WHERE
    k: int = Field(3, ge=1, lt=MAX_CANDIDATES)  # a reference step may make one more
    min_margin: float = Field(0.2, ge=0.0)
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature of candidates after the first (greedy) one.")
    reference: bool = Field(True, description="Offer the verified trajectory's step as a candidate while the walk follows it.")
    limit: int | None = None


class PrefsSummary(BaseModel):
    run_id: str
    tasks: int
    done_before: int
    states: int
    answered: int
    pairs: Counter
    failed: int
    seconds: float

    def render(self) -> str:
        by_rule = ", ".join(f"{n} {rule}" for rule, n in sorted(self.pairs.items())) or "none"
        walks = self.tasks - self.done_before - self.failed
        return (f"prefs {self.run_id}: {self.tasks} tasks ({self.done_before} already done), {walks} walks "
                f"({self.answered} reached a final answer), {self.states} states judged, "
                f"{sum(self.pairs.values())} pairs ({by_rule}), {self.failed} failed in {self.seconds:.1f}s\n"
                f"look at them: mmat sql \"select rule, count(*) from preference_pairs where run_id = '{self.run_id}' "
                f"group by 1\"")


def _step_json(step, source: str) -> dict:
    return {"thought": step.thought, "code": step.code, "observation": step.observation, "error": step.error, "source": source}


def _pair_rows(run_id: str, task_id: str, traj_id: str, judge: str, walk) -> list[dict]:
    rows = []
    for state in walk.states:
        for pair in state.pairs:
            chosen, rejected = state.candidates[pair.chosen], state.candidates[pair.rejected]
            rows.append({
                "pair_id": content_id("pair", run_id, traj_id, pair.step_idx, chosen.code, rejected.code),
                "run_id": run_id, "task_id": task_id, "traj_id": traj_id, "step_idx": pair.step_idx,
                "chosen": _step_json(chosen, state.sources[pair.chosen]),
                "rejected": _step_json(rejected, state.sources[pair.rejected]), "judge": judge,
                "chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score, "rule": pair.rule,
                "reasons": {"chosen": state.ranking.reasons[pair.chosen], "rejected": state.ranking.reasons[pair.rejected]},
                "created_at": utcnow(),
            })
    return rows


def _select(store, request: PrefsRequest) -> list[dict]:
    from mmat.pipeline.training_data import user_selection

    limit = f" LIMIT {int(request.limit)}" if request.limit else ""
    return user_selection(
        store,
        "SELECT t.traj_id, t.task_id, t.tools, t.verdict, t.origin, k.query FROM trajectories t JOIN tasks k USING (task_id) "
        f"WHERE {request.where} "  # one row per task; a synthesis attempt's tool list before a walk's
        "QUALIFY row_number() OVER (PARTITION BY t.task_id ORDER BY t.origin = 'prefs', t.attempt, t.traj_id) = 1 "
        f"ORDER BY t.traj_id{limit}",
        flag="--tasks-where selection", columns="t.* (trajectories), k.* (tasks)",
    )


def run_prefs(settings: Settings, request: PrefsRequest, *, command: str = "mmat prefs", progress: bool = True) -> PrefsSummary:
    """Walk every selected task along the judge's winner and store the walks and their step preference pairs
    (resumable per task)."""
    from mmat.lm import build_lm, check_model, configure_litellm
    from mmat.store import open_store
    from mmat.store import resumable_run_id, run_lifecycle

    started = time.monotonic()
    configure_litellm(settings)
    controller, judge = settings.controller_model, settings.judge_model
    for model in {controller, judge}:
        check_model(model, settings)
    controller_lm, judge_lm = build_lm(controller, settings=settings), build_lm(judge, settings=settings)

    with open_store(settings) as store:
        identity = {"controller": controller, "judge": judge, **request.model_dump(exclude={"limit"})}
        run_id = resumable_run_id("prefs", identity, "prefs")
        rows = _select(store, request)
        if not rows:
            raise ConfigError(
                f"no task matches --tasks-where {request.where!r}. The default takes tasks with a verified-correct trajectory; "
                "with the embedded 135M verifier there may be none: try --tasks-where \"k.status = 'failed'\" (tasks whose "
                "trajectories were not verified), or synthesize with a stronger teacher.")
        with run_lifecycle(store, "prefs", settings, command, run_id=run_id, progress=progress) as run:
            summary = _walk_tasks(settings, store, request, run, rows, controller, judge, controller_lm, judge_lm,
                                  started)
            run.summary = summary.model_dump(mode="json")
    return summary


def _walk_tasks(settings: Settings, store, request: PrefsRequest, run, rows: list[dict[str, Any]],
                controller: str, judge: str, controller_lm, judge_lm, started: float) -> PrefsSummary:
    """Walk every selected task that is not done yet; one ``prefs_tasks`` marker per task once its rows are
    flushed."""
    from mmat.store import LMCallRecorder
    from mmat.store.rows import delete_unfinished_walks

    run_id = run.run_id
    done = run.done_units("prefs_tasks")
    delete_unfinished_walks(store, run_id)  # failed tasks are retried from scratch
    todo = [r for r in rows if r["task_id"] not in done]
    recorder = LMCallRecorder(store, run_id)
    pairs_by_rule: Counter[str] = Counter()
    states = answered = failed = 0
    with run.progress("prefs", len(todo)) as bar:
        for row in todo:
            reason, result, pair_rows = _walk_one(settings, store, request, run_id, row, controller, judge, controller_lm,
                                                  judge_lm, recorder)
            if reason:
                failed += 1
            else:
                states += len(result.states)
                answered += result.trajectory.status == "answered"
                pairs_by_rule.update(p["rule"] for p in pair_rows)
            run.mark_unit("prefs_tasks", row["task_id"], "failed" if reason else "done", n_pairs=len(pair_rows),
                          reason=reason)
            bar.advance(f"pairs {sum(pairs_by_rule.values())} · failed {failed}")
    return PrefsSummary(run_id=run_id, tasks=len(rows), done_before=len(rows) - len(todo), states=states,
                        answered=answered, pairs=pairs_by_rule, failed=failed, seconds=time.monotonic() - started)


def _walk_one(settings: Settings, store, request: PrefsRequest, run_id: str, row: dict[str, Any], controller: str,
              judge: str, controller_lm, judge_lm, recorder):
    """One task's walk and its rows (flushed); returns (failure reason or None, walk result, pair rows)."""
    import dspy

    from mmat.lm import adapter_for
    from mmat.pipeline.training_data import load_files, load_steps
    from mmat.programs import CodeAgent, PreferenceWalk, TrajectoryResult
    from mmat.store import attributed
    from mmat.store.blobs import safe_suffix
    from mmat.store.rows import RowBatch, trajectory_rows, write_batch

    task_id, tools = row["task_id"], list(row["tools"] or [])
    traj_id = content_id("traj", task_id, "prefs", run_id)
    workspace = settings.workspaces_dir / f"prefs_{run_id}" / traj_id
    shutil.rmtree(workspace, ignore_errors=True)
    verified = row["verdict"] == "correct" and row["origin"] == "synth"
    reference = load_steps(store, row["traj_id"]) if request.reference and verified else None
    try:
        with dspy.context(lm=controller_lm, adapter=adapter_for(controller), callbacks=[recorder]), \
                attributed(task_id=task_id, traj_id=traj_id):
            walk = PreferenceWalk(CodeAgent(tools, settings=settings), k=request.k, temperature=request.temperature,
                                  min_margin=request.min_margin,
                                  judge_context={"lm": judge_lm, "adapter": adapter_for(judge)})
            result = walk(row["query"], load_files(store, task_id), workspace, tools=tools, reference=reference)
    except (ModelOutputError, SandboxError) as e:  # the model's (or one sandbox's) failure: recorded, run goes on
        return f"{type(e).__name__}: {e}", None, []
    written = RowBatch(lambda path: store.put_blob(path, safe_suffix(path)))
    trajectory_rows(written, run_id, task_id, TrajectoryResult(attempt=0, controller=controller, trajectory=result.trajectory),
                    workspace, None, traj_id=traj_id, origin="prefs")
    pair_rows = _pair_rows(run_id, task_id, traj_id, judge, result)
    write_batch(store, {**written.tables, "preference_pairs": pair_rows})
    shutil.rmtree(workspace, ignore_errors=True)  # step images are blobs now
    return None, result, pair_rows
