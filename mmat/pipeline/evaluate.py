"""`mmat eval`: drive the CodeAgent (a teacher, or a local student + adapter) over a benchmark.

The eval package scores and stores; this module adapts the CodeAgent to its ``solve(item, sample_idx) ->
AgentOutcome`` contract and wires the scorers' models: the sentence-embedding model for GTA's subjective
answers and the LLM judge for Agent-X. Sample 0 is greedy (temperature 0); best-of-N samples use the run's
temperature with distinct DSPy rollout ids. Every trajectory is stored (``trajectories`` + ``steps``,
task_id ``eval:<run>:<item>``, the same task_id its ``eval_items`` row carries); every LM call — the
agent's and the judge's — lands in ``lm_calls`` under the eval's run id and the item's task id.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from mmat.config import Settings
from mmat.errors import ConfigError
from mmat.ids import content_id

__all__ = ["EvalRequest", "run_benchmark", "bench_kind", "BENCH_KINDS"]

BENCH_KINDS = ("gta", "gaia", "agentx", "mmat")
_AGENTX_NAMES = ("agentx", "agent-x", "agent_x")


class EvalRequest(BaseModel):
    """What `mmat eval` runs: the benchmark file (or mmat's own eval split), the item limit, samples per item and the
    judge."""
    bench: Path | None = None
    kind: str | None = None  # gta | gaia | agentx | mmat (default: from the file)
    data_dir: Path | None = None
    best_of_n: int = 1
    split: str = "eval"
    limit: int | None = None
    judge: str | None = None  # Agent-X judge model (default: the settings' judge)
    generative_ids: Path | None = None
    frame_times_s: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0)
    action_grammar: Literal["auto", "on", "off"] | None = None
    command: str | None = None


def bench_kind(path: Path | None, kind: str | None) -> str:
    """The benchmark format: as given, else .jsonl -> gaia; a .json whose name or content says Agent-X -> agentx;
    other .json -> gta; no file -> mmat's own eval split."""
    if kind:
        if kind not in BENCH_KINDS:
            raise ConfigError(f"unknown bench format {kind!r}: choose one of {', '.join(BENCH_KINDS)}.")
        return kind
    if path is None:
        return "mmat"
    if path.suffix == ".jsonl":
        return "gaia"
    lowered = str(path).lower()
    if any(name in lowered for name in _AGENTX_NAMES) or _looks_like_agentx_data(path):
        return "agentx"
    return "gta"


def _looks_like_agentx_data(path: Path) -> bool:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the loader reports it
    from mmat.eval.agentx import agentx_format

    try:
        return agentx_format(raw) == "data"
    except ConfigError:
        return False


def _outcome(trajectory, traj_id: str):
    from mmat.eval import AgentOutcome
    from mmat.eval.outcome import OutcomeCall, OutcomeStep

    code_steps = [s for s in trajectory.steps if s.code.strip()]
    steps = [
        OutcomeStep(
            idx=s.idx, thought=s.thought, code=s.code, observation=s.observation, error=s.error,
            unreadable=not s.code.strip() and bool(s.error and s.error.startswith("ModelOutputError")),
            tool_calls=[OutcomeCall(name=c.name, arguments=dict(c.arguments or {}), result=c.result, error=c.error)
                        for c in s.tool_calls],
        )
        for s in trajectory.steps
    ]
    return AgentOutcome(
        answer=trajectory.answer or "",
        tools_called=[c.name for s in trajectory.steps for c in s.tool_calls],
        n_code_steps=len(code_steps), n_code_errors=sum(1 for s in code_steps if s.error),
        n_steps=len(trajectory.steps), n_unreadable_steps=sum(s.unreadable for s in steps),
        status=trajectory.status, steps=steps, traj_id=traj_id,
        error=None if trajectory.status == "answered" else f"agent stopped: {trajectory.status}",
    )


def _load(kind: str, request: EvalRequest, settings: Settings, store: Any):
    from mmat.eval import load_bench
    from mmat.eval.agentx import load_agentx, read_generative_ids
    from mmat.eval.gta import load_gta

    media_dir = settings.cache_dir / "eval_media"
    if kind == "agentx":
        if request.bench is None:
            raise ConfigError("bench agentx needs a benchmark file: pass --bench path/to/data.json or dataset.json.")
        ids = read_generative_ids(request.generative_ids) if request.generative_ids else None
        return load_agentx(request.bench, data_dir=request.data_dir, media_dir=media_dir, generative_ids=ids,
                           frame_times_s=request.frame_times_s)
    if request.generative_ids is not None:
        raise ConfigError("--generative-ids applies to Agent-X only: pass --format agentx with it.")
    if kind == "gta":
        if request.bench is None:
            raise ConfigError("bench gta needs a benchmark file: pass the path to GTA's dataset.json.")
        return load_gta(request.bench, data_dir=request.data_dir, media_dir=media_dir, frame_times_s=request.frame_times_s)
    return load_bench(kind, request.bench, data_dir=request.data_dir, store=store, split=request.split)


def _needs_similarity(items) -> bool:
    return any(i.answer_kind == "subjective" or (i.answer_kind == "none" and i.bench_calls) for i in items)


def run_benchmark(settings: Settings, request: EvalRequest, *, progress: bool = True):
    """Load the benchmark, run the agent on every item (best-of-N), score, store; returns (EvalRunResult,
    LoadReport)."""
    import dspy

    from mmat.eval import eval_run_id_for, run_eval
    from mmat.eval.results import Scoring
    from mmat.eval.runner import eval_task_id
    from mmat.lm import adapter_for, build_lm, check_model, configure_litellm
    from mmat.programs import CodeAgent
    from mmat.programs.files import GeneratedFile
    from mmat.programs.synthesis import TrajectoryResult
    from mmat.store import open_store
    from mmat.store import LMCallRecorder, recording_task
    from mmat.store.blobs import safe_suffix
    from mmat.store.rows import RowBatch, trajectory_rows, write_batch
    from mmat.tools import agent_tools, without_final

    if request.action_grammar is not None:
        settings = settings.model_copy(update={"agent_action_grammar": request.action_grammar})
    configure_litellm(settings)
    controller = settings.controller_model
    check_model(controller, settings)
    kind = bench_kind(request.bench, request.kind)
    judge_model = (request.judge or settings.judge_model) if kind == "agentx" else None
    if judge_model is not None:
        check_model(judge_model, settings)
    lm = build_lm(controller, settings=settings)
    judge_lm = build_lm(judge_model, settings=settings) if judge_model else None
    default_tools = agent_tools(settings)

    with open_store(settings) as store:
        report = _load(kind, request, settings, store)
        items = report.items[: request.limit] if request.limit else report.items
        bench_path = str(request.bench or "store")
        run_settings = settings.model_copy()
        run_id = eval_run_id_for(items, bench=kind, bench_path=bench_path, controller=controller,
                                 best_of_n=request.best_of_n, settings=run_settings)
        if kind == "agentx":  # another judge, other image-answer ids or other video frames measure another run
            run_id = content_id(run_id, "judge", judge_model, sorted(i.key for i in items if i.generative),
                                list(request.frame_times_s))
        recorder = LMCallRecorder(store, run_id)
        workspaces = settings.workspaces_dir / f"eval_{run_id}"

        similarity = None
        if _needs_similarity(items):
            from mmat.eval.similarity import load_similarity

            similarity = load_similarity()

        judge = None
        if judge_lm is not None:
            from mmat.programs.agentx_judge import AgentXJudge

            program = AgentXJudge()

            def judge(item, outcome):
                with recording_task(eval_task_id(run_id, item.key)), \
                        dspy.context(lm=judge_lm, adapter=adapter_for(judge_model), callbacks=[recorder]):
                    return program(item, outcome)

        def solve(item, sample_idx: int):
            tools = without_final(item.tools or default_tools)
            names = item.file_names or [None] * len(item.files)
            files = [GeneratedFile.from_path(p, name=n) for p, n in zip(item.files, names, strict=True)]
            config = {"temperature": 0.0} if sample_idx == 0 else {"rollout_id": sample_idx, "temperature": settings.temperature}
            workspace = workspaces / f"{content_id(item.key)}_{sample_idx}"
            shutil.rmtree(workspace, ignore_errors=True)
            agent = CodeAgent(tools, settings=settings)
            task_id = eval_task_id(run_id, item.key)
            with recording_task(task_id), \
                    dspy.context(lm=lm, adapter=adapter_for(controller), callbacks=[recorder]):
                trajectory = agent(item.question, files, workspace, config=config)
            rows = RowBatch(lambda p: store.put_blob(p, safe_suffix(p)))
            traj_id = trajectory_rows(rows, run_id, task_id,
                                      TrajectoryResult(attempt=sample_idx, controller=controller, trajectory=trajectory),
                                      workspace, None, origin="eval")
            write_batch(store, rows, flush=False)  # the runner flushes with the sample's eval_items row
            return _outcome(trajectory, traj_id)

        result = run_eval(
            items, solve, store=store, bench=kind, bench_path=bench_path, controller=controller,
            best_of_n=request.best_of_n, concurrency=settings.concurrency, settings=run_settings, eval_run_id=run_id,
            progress=progress, scoring=Scoring(similarity=similarity, judge=judge),
            embedding_model=similarity.label if similarity else None, judge_model=judge_model,
            command=request.command,
        )
    return result, report
