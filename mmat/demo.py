"""`mmat demo`: the whole pipeline on the embedded, offline teacher, small enough for a laptop CPU.

1. synth: a few seeds with local/smollm2-135m as teacher, controller and verifier (files from the
   bundled image pool and sandboxed teacher code, a short agent budget);
2. finetune: a LoRA text student (SmolLM2-135M, dequantized from the shipped GGUF) on the verified
   trajectories, images rendered to text exactly as at inference;
3. the tuned student against its base model on a tiny held-out GTA-format set (`mmat eval compare`);
4. a summary of what landed in the store — including how many tasks and trajectories the rule checks
   rejected and which checks — with the commands to look further (`mmat view`).

The 135M teacher makes the pipeline run offline; it does not make good data. Quality comes from a
real teacher: `mmat synth --teacher openai/gpt-4o-mini ...`.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from mmat.config import Settings

__all__ = ["run_demo", "DemoSummary", "DEMO_TOOLS", "RuleCounts", "rule_counts"]

# Image tools only: task images come from the bundled pool by retrieval, while documents would need the
# teacher to write working Python, which a 135M model does not (it shows in the store as rejected files).
DEMO_TOOLS = ["ocr", "facedetection", "visualizer"]
DEMO_OVERRIDES = {"agent_max_steps": 3, "agent_error_tolerance": 1, "file_retries": 1, "concurrency": 1, "max_tokens": 600}
STUDENT = "smollm2-135m"
TRAIN = {"max_steps": 3, "max_length": 4096, "batch_size": 1, "rank": 8, "alpha": 16, "lr": 5e-4, "cpu_threads": 2,
         "save_steps": 4}


class RuleCounts(BaseModel):
    """What the rule checks did to one kind of subject (task or trajectory) in the store."""

    checked: int = 0
    rejected: int = 0
    why: dict[str, int] = {}  # check name -> subjects it rejected

    def render(self, noun: str) -> str:
        why = ", ".join(f"{check} {n}" for check, n in self.why.items())
        return f"{self.rejected} of {self.checked} {noun}" + (f" ({why})" if why else "")


def rule_counts(store) -> dict[str, RuleCounts]:
    """Per subject kind: subjects the rules checked, rejected, and per check how many it rejected (rows of
    ``mmat verify`` count once per subject)."""
    out = {kind: RuleCounts() for kind in ("task", "trajectory")}
    for r in store.sql("SELECT subject_kind AS kind, count(DISTINCT subject_id) AS n, "
                       "count(DISTINCT subject_id) FILTER (WHERE NOT passed) AS rejected "
                       "FROM verdicts WHERE verifier = 'rules' GROUP BY 1"):
        counts = out.setdefault(r["kind"], RuleCounts())
        counts.checked, counts.rejected = r["n"], r["rejected"]
    for r in store.sql("SELECT kind, split_part(reason, ': ', 1) AS rule, count(DISTINCT subject_id) AS n FROM "
                       "(SELECT subject_kind AS kind, subject_id, unnest(cast(reasons AS VARCHAR[])) AS reason "
                       " FROM verdicts WHERE verifier = 'rules') GROUP BY ALL ORDER BY n DESC, rule"):
        out.setdefault(r["kind"], RuleCounts()).why[r["rule"]] = r["n"]
    return out


class DemoSummary(BaseModel):
    synth_line: str
    tasks: dict[str, int]
    trajectories: int
    correct: int
    rules: dict[str, RuleCounts] = {}
    lm_calls: list[dict]
    adapter: str | None
    train_line: str
    eval_text: str = ""
    home: str = ".mmat"
    seconds: float

    def rules_line(self) -> str:
        traj, task = self.rules.get("trajectory", RuleCounts()), self.rules.get("task", RuleCounts())
        return (f"rule checks rejected {traj.render('trajectories')} and {task.render('tasks')}, before any verifier "
                "model was asked: mmat sql \"select subject_kind, reasons from verdicts where verifier = 'rules' and not passed\"")

    def render(self) -> str:
        calls = "\n".join(f"  {c['model']}: {c['n']} calls, {c['prompt']} prompt + {c['completion']} completion tokens"
                          for c in self.lm_calls)
        tasks = ", ".join(f"{n} {status}" for status, n in sorted(self.tasks.items()))
        return "\n".join([
            self.synth_line.splitlines()[0],
            f"tasks: {tasks or 'none'}; trajectories: {self.trajectories} ({self.correct} verified correct)",
            self.rules_line(),
            "LM calls:", calls or "  none",
            self.train_line,
            *([self.eval_text] if self.eval_text else []),
            "look further:",
            f"  mmat view --home {self.home}   # runs, report, trajectories with their images: http://127.0.0.1:8765/",
            f"  mmat report --home {self.home}",
            '  mmat sql "select status, count(*) from tasks group by 1"',
            '  mmat sql "select model, module, count(*), sum(completion_tokens) from lm_calls group by all"',
            "  mmat export llamafactory --out out/",
            "  mmat prefs --candidates 3   # step preference pairs along a judged walk (about a minute per task here)",
            f"demo done in {self.seconds:.0f}s (all offline, state in MMAT_HOME)",
        ])


def _student_where(store) -> tuple[str, str]:
    correct = store.sql("SELECT count(*) AS n FROM trajectories WHERE verdict = 'correct' AND NOT starts_with(task_id, 'eval:')")[0]["n"]
    if correct:
        return "t.verdict = 'correct'", f"{correct} verified trajectories"
    # The 135M verifier rarely says 'correct'; train on every trajectory so the demo still shows the mechanics.
    return "TRUE", "all trajectories (none was verified correct by the 135M verifier; use --where with a real teacher)"


def run_demo(settings: Settings, *, tasks: int = 2) -> DemoSummary:
    from mmat.pipeline.finetune import run_sft
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.store import open_store

    started = time.monotonic()
    settings = settings.model_copy(update=DEMO_OVERRIDES)
    synth = run_synth(settings, SynthRequest(tasks=tasks, tools=DEMO_TOOLS, trajectories_per_task=1, queries_per_seed=1),
                      command="mmat demo")

    with open_store(settings, read_only=True) as store:
        where, what = _student_where(store)
        n_traj = store.sql("SELECT count(*) AS n FROM trajectories")[0]["n"]

    adapter, train_line, eval_text = None, "finetune: skipped (no trajectory landed; run the demo again to continue)", ""
    if n_traj:
        out = settings.adapters_dir / "demo-student"
        result = run_sft(settings, model=STUDENT, out=out, where=where, command="mmat demo", **TRAIN)
        adapter = str(result.adapter_dir)
        first, last = result.losses[0], result.losses[-1]
        train_line = (f"finetune: LoRA student {STUDENT} on {what}: {result.n_samples} samples, {result.global_step} steps, "
                      f"loss {first:.3f} -> {last:.3f}, adapter {Path(adapter)} (serve it as --controller local/{adapter})")
        eval_text = _closing_eval(settings, adapter)

    with open_store(settings, read_only=True) as store:
        statuses = {r["status"]: r["n"] for r in store.sql(
            "SELECT status, count(*) AS n FROM tasks GROUP BY 1")}
        correct = store.sql("SELECT count(*) AS n FROM trajectories WHERE verdict = 'correct'")[0]["n"]
        calls = store.sql("SELECT model, count(*) AS n, coalesce(sum(prompt_tokens), 0) AS prompt, "
                          "coalesce(sum(completion_tokens), 0) AS completion FROM lm_calls GROUP BY 1 ORDER BY 1")
        rules = rule_counts(store)
    return DemoSummary(synth_line=synth.render(), tasks=statuses, trajectories=n_traj, correct=correct, rules=rules,
                       lm_calls=calls, adapter=adapter, train_line=train_line, eval_text=eval_text,
                       home=str(settings.home.absolute()), seconds=time.monotonic() - started)


def _closing_eval(settings: Settings, adapter: str) -> str:
    """Base model vs tuned student on a held-out set the demo writes (two items, two agent steps each)."""
    from mmat.pipeline.heldout import compare_student, write_heldout_gta

    bench = write_heldout_gta(settings.home / "demo_heldout")
    return compare_student(settings, base=f"local/{STUDENT}", tuned=f"local/{adapter}", bench=bench).render()
