"""`mmat eval`: drive the CodeAgent (a teacher, or a local student + adapter) over a benchmark.

The eval package scores and stores; this module only adapts the CodeAgent to its ``solve(item,
sample_idx) -> AgentOutcome`` contract. Sample 0 is greedy (temperature 0); best-of-N samples use
the run's temperature with distinct DSPy rollout ids. Every trajectory is stored (``trajectories`` +
``steps``, task_id ``eval:<run>:<item>``) so failures can be read back with SQL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel

from mmat.config import Settings
from mmat.ids import content_id

__all__ = ["EvalRequest", "run_benchmark", "bench_kind"]


class EvalRequest(BaseModel):
    bench: Path | None = None
    kind: str | None = None  # gta | gaia | mmat (default: from the file suffix)
    data_dir: Path | None = None
    best_of_n: int = 1
    split: str = "eval"
    limit: int | None = None


def bench_kind(path: Path | None, kind: str | None) -> str:
    if kind:
        return kind
    if path is None:
        return "mmat"
    return "gaia" if path.suffix == ".jsonl" else "gta"


def _outcome(trajectory, traj_id: str):
    from mmat.eval import AgentOutcome

    code_steps = [s for s in trajectory.steps if s.code.strip()]
    return AgentOutcome(
        answer=trajectory.answer or "",
        tools_called=[c.name for s in trajectory.steps for c in s.tool_calls],
        n_code_steps=len(code_steps), n_code_errors=sum(1 for s in code_steps if s.error),
        n_steps=len(trajectory.steps), traj_id=traj_id,
        error=None if trajectory.status == "answered" else f"agent stopped: {trajectory.status}",
    )


def run_benchmark(settings: Settings, request: EvalRequest, *, progress: bool = True):
    """Load the benchmark, run the agent on every item (best-of-N), score, store; returns EvalRunResult."""
    import dspy

    from mmat.eval import eval_run_id_for, load_bench, run_eval
    from mmat.lm import adapter_for, build_lm, check_model, configure_litellm
    from mmat.pipeline.rows import SeedRows, trajectory_rows
    from mmat.store.blobs import safe_suffix
    from mmat.programs import CodeAgent
    from mmat.programs.files import GeneratedFile
    from mmat.programs.synthesis import TrajectoryResult
    from mmat.runtime import open_store
    from mmat.store import LMCallRecorder
    from mmat.tools import available_tools

    configure_litellm(settings)
    controller = settings.controller_model
    check_model(controller, settings)
    kind = bench_kind(request.bench, request.kind)
    lm = build_lm(controller, settings=settings)
    default_tools = [t for t in available_tools(settings) if t != "final_answer"]

    with open_store(settings) as store:
        report = load_bench(kind, request.bench, data_dir=request.data_dir, store=store, split=request.split)
        items = report.items[: request.limit] if request.limit else report.items
        run_id = eval_run_id_for(items, bench=kind, bench_path=str(request.bench or "store"), controller=controller,
                                 best_of_n=request.best_of_n, settings=settings)
        recorder = LMCallRecorder(store, run_id)
        workspaces = settings.workspaces_dir / f"eval_{run_id}"

        def solve(item, sample_idx: int):
            tools = [t for t in (item.tools or default_tools) if t != "final_answer"]
            names = item.file_names or [None] * len(item.files)
            files = [GeneratedFile.from_path(p, name=n) for p, n in zip(item.files, names, strict=True)]
            config = {"temperature": 0.0} if sample_idx == 0 else {"rollout_id": sample_idx, "temperature": settings.temperature}
            workspace = workspaces / f"{content_id(item.key)}_{sample_idx}"
            shutil.rmtree(workspace, ignore_errors=True)
            agent = CodeAgent(tools, settings=settings)
            with dspy.context(lm=lm, adapter=adapter_for(controller), callbacks=[recorder]):
                trajectory = agent(item.question, files, workspace, config=config)
            rows = SeedRows(lambda p: store.put_blob(p, safe_suffix(p)))
            traj_id = trajectory_rows(rows, run_id, f"eval:{run_id}:{item.key}",
                                      TrajectoryResult(attempt=sample_idx, controller=controller, trajectory=trajectory),
                                      workspace, None, origin="eval")
            for table, table_rows in rows.tables.items():
                store.writer.put(table, table_rows)
            return _outcome(trajectory, traj_id)

        result = run_eval(items, solve, store=store, bench=kind, bench_path=str(request.bench or "store"),
                          controller=controller, best_of_n=request.best_of_n, concurrency=settings.concurrency,
                          settings=settings, eval_run_id=run_id, progress=progress)
    return result, report
