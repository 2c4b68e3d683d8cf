"""`mmat prefs`: step-level preference pairs (MATRIX Pref-X style) from verified trajectories.

For each selected trajectory, StepSampler proposes k alternative next steps at every state and runs
each in an isolated fork of the sandbox; StepJudge scores the original and the alternatives;
``preference_pairs`` keeps (chosen, rejected) pairs by rule (error, format, score margin). The walk
follows the verified trajectory, so every pair's context is a stored prefix of it (``traj_id`` +
``step_idx``) and the prompt can be rebuilt exactly for step-DPO.

Resume: a trajectory is marked done in ``prefs_tasks`` after its pairs are flushed; a rerun skips it,
and first deletes this run's pairs of trajectories that never got the mark.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter

from pydantic import BaseModel

from mmat.config import Settings
from mmat.errors import ModelOutputError, SandboxError
from mmat.ids import content_id
from mmat.store.runs import utcnow

__all__ = ["PrefsRequest", "PrefsSummary", "run_prefs", "DEFAULT_PREFS_WHERE"]

# One verified-correct trajectory per task (the first attempt that was judged correct).
DEFAULT_PREFS_WHERE = "t.verdict = 'correct' AND k.status = 'solved'"


class PrefsRequest(BaseModel):
    where: str = DEFAULT_PREFS_WHERE
    k: int = 3
    min_margin: float = 0.2
    limit: int | None = None


class PrefsSummary(BaseModel):
    run_id: str
    trajectories: int
    done_before: int
    states: int
    pairs: Counter
    failed: int
    seconds: float

    def render(self) -> str:
        by_rule = ", ".join(f"{n} {rule}" for rule, n in sorted(self.pairs.items())) or "none"
        return (f"prefs {self.run_id}: {self.trajectories} trajectories ({self.done_before} already done), "
                f"{self.states} states sampled, {sum(self.pairs.values())} pairs ({by_rule}), {self.failed} failed "
                f"in {self.seconds:.1f}s\nlook at them: mmat sql \"select rule, count(*) from preference_pairs "
                f"where run_id = '{self.run_id}' group by 1\"")


def _step_json(step) -> dict:
    return {"thought": step.thought, "code": step.code, "observation": step.observation, "error": step.error}


def _select(store, request: PrefsRequest) -> list[dict]:
    from mmat.pipeline.conversations import user_selection

    limit = f" LIMIT {int(request.limit)}" if request.limit else ""
    return user_selection(
        store,
        "SELECT t.traj_id, t.task_id, t.tools, k.query FROM trajectories t JOIN tasks k USING (task_id) "
        f"WHERE {request.where} QUALIFY row_number() OVER (PARTITION BY t.task_id ORDER BY t.attempt) = 1 "
        f"ORDER BY t.traj_id{limit}",
        flag="--tasks selection", columns="t.* (trajectories), k.* (tasks)",
    )


def run_prefs(settings: Settings, request: PrefsRequest, *, command: str = "mmat prefs", progress: bool = True) -> PrefsSummary:
    import dspy

    from mmat.lm import adapter_for, build_lm, check_model, configure_litellm
    from mmat.pipeline.conversations import load_files, load_steps
    from mmat.pipeline.progress import ProgressBar
    from mmat.programs import CodeAgent
    from mmat.programs.prefs import StepJudge, StepSampler, preference_pairs
    from mmat.runtime import open_store
    from mmat.store import LMCallRecorder, resumable_run_id

    started = time.monotonic()
    configure_litellm(settings)
    controller, judge = settings.controller_model, settings.judge_model
    for model in {controller, judge}:
        check_model(model, settings)
    controller_lm, judge_lm = build_lm(controller, settings=settings), build_lm(judge, settings=settings)

    with open_store(settings) as store:
        identity = {"controller": controller, "judge": judge, **request.model_dump(exclude={"limit"})}
        run_id = resumable_run_id("prefs", identity, "prefs")
        store.start_run("prefs", settings, command, run_id=run_id)
        done = {r["task_id"] for r in store.sql(
            "SELECT task_id FROM prefs_tasks WHERE run_id = ? AND status = 'done'", [run_id])}
        store.writer.execute(  # pairs of trajectories a kill interrupted; failed ones are retried
            "DELETE FROM preference_pairs WHERE run_id = ? AND task_id NOT IN "
            "(SELECT task_id FROM prefs_tasks WHERE run_id = ? AND status = 'done')", [run_id, run_id])
        rows = _select(store, request)
        todo = [r for r in rows if r["task_id"] not in done]
        recorder = LMCallRecorder(store, run_id)
        pairs_by_rule: Counter[str] = Counter()
        states = failed = 0

        with ProgressBar("prefs", len(todo), progress) as bar:
            for row in todo:
                tools = list(row["tools"] or [])
                files, steps = load_files(store, row["task_id"]), load_steps(store, row["traj_id"])
                workspace = settings.workspaces_dir / f"prefs_{run_id}" / row["traj_id"]
                shutil.rmtree(workspace, ignore_errors=True)
                pair_rows, reason = [], None
                try:
                    with dspy.context(lm=controller_lm, adapter=adapter_for(controller), callbacks=[recorder]):
                        agent = CodeAgent(tools, settings=settings)
                        samples = StepSampler(agent, k=request.k, temperature=max(settings.temperature, 0.7))(
                            row["query"], files, steps, workspace, tools=tools)
                    for sample in samples:
                        states += 1
                        with dspy.context(lm=judge_lm, adapter=adapter_for(judge), callbacks=[recorder]):
                            ranking = StepJudge()(row["query"], files, steps[: sample.step_idx], sample.candidates)
                        for pair in preference_pairs(sample, ranking, min_margin=request.min_margin):
                            chosen, rejected = sample.candidates[pair.chosen], sample.candidates[pair.rejected]
                            pair_rows.append({
                                "pair_id": content_id("pair", run_id, row["traj_id"], pair.step_idx, chosen.code, rejected.code),
                                "run_id": run_id, "task_id": row["task_id"], "traj_id": row["traj_id"],
                                "step_idx": pair.step_idx, "chosen": _step_json(chosen), "rejected": _step_json(rejected),
                                "judge": judge, "chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score,
                                "rule": pair.rule, "created_at": utcnow(),
                                "reasons": {"chosen": ranking.reasons[pair.chosen], "rejected": ranking.reasons[pair.rejected]},
                            })
                            pairs_by_rule[pair.rule] += 1
                except (ModelOutputError, SandboxError) as e:  # the model's (or one sandbox's) failure: recorded, run goes on
                    failed += 1
                    reason = f"{type(e).__name__}: {e}"
                    pair_rows = []
                if pair_rows:
                    store.writer.put("preference_pairs", pair_rows)
                store.writer.flush()
                store.writer.put("prefs_tasks", [{"run_id": run_id, "task_id": row["task_id"], "status": "failed" if reason else "done",
                                                  "n_pairs": len(pair_rows), "reason": reason, "finished_at": utcnow()}])
                store.writer.flush()
                bar.advance(f"pairs {sum(pairs_by_rule.values())} · failed {failed}")

        summary = PrefsSummary(run_id=run_id, trajectories=len(rows), done_before=len(rows) - len(todo), states=states,
                               pairs=pairs_by_rule, failed=failed, seconds=time.monotonic() - started)
        store.finish_run(run_id, "done", summary.model_dump(mode="json"))
    return summary
