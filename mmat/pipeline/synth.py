"""`mmat synth`: run the Synthesis program over many seeds, in parallel, into the store.

Concurrency: seeds run on a thread pool (the work is LM-bound); rows are written only from the
calling thread through the store's single writer.

Resume: the run ID is a hash of what the run was asked to make (models, tools, domains, split,
trajectories per task, seed, compiled program), not of how (concurrency, count). A seed is marked
done in ``synth_seeds`` only after all its rows are flushed. A rerun skips done seeds and first
deletes whatever rows an interrupted seed left behind, so after any ``kill -9`` the counts come out
exact and nothing is duplicated.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from mmat.config import Settings
from mmat.decontam import NgramIndex
from mmat.errors import ConfigError
from mmat.ids import sha256_file
from mmat.pipeline.pool_store import load_pool
from mmat.pipeline.progress import ProgressBar
from mmat.pipeline.rows import SEED_TABLES, seed_rows
from mmat.store.blobs import safe_suffix
from mmat.store.runs import utcnow

__all__ = ["SynthRequest", "SynthSummary", "run_synth"]


class SynthRequest(BaseModel):
    """What to synthesize. Fields that change *what* is made are part of the run ID."""

    tasks: int = 10
    domains: list[str] | None = None
    tools: list[str] | None = None
    trajectories_per_task: int | None = None
    split: str = "train"
    program: Path | None = None
    exclude: Path | None = None
    queries_per_seed: int = 3

    def identity(self, settings: Settings) -> dict[str, Any]:
        return {
            "teacher": settings.teacher, "controller": settings.controller_model, "verifier": settings.verifier_model,
            "domains": self.domains, "tools": self.tools, "split": self.split, "seed": settings.seed,
            "k": self.trajectories_per_task or settings.trajectories_per_task, "queries_per_seed": self.queries_per_seed,
            "program": sha256_file(self.program) if self.program else None,
            "max_steps": settings.agent_max_steps,
        }


class SynthSummary(BaseModel):
    run_id: str
    seeds_total: int
    seeds_done_before: int
    seeds_run: int
    counts: dict[str, int]
    excluded: int
    seconds: float

    def render(self) -> str:
        c = Counter(self.counts)
        line = (
            f"synth {self.run_id}: {self.seeds_run} seed(s) run ({self.seeds_done_before} already done) in "
            f"{self.seconds:.1f}s — {c['generated']} tasks generated, {c['files_ok']} with files, "
            f"{c['verified'] + c['solved']} verified, {c['solved']} solved, {c['rejected']} rejected, "
            f"{c['failed']} failed, {c['trajectories']} trajectories ({c['trajectories_correct']} correct)"
        )
        if self.excluded:
            line += f", {self.excluded} dropped for a 13-gram overlap with the benchmark"
        return line + (
            f"\nlook at them: mmat sql \"select status, count(*) from tasks where run_id = '{self.run_id}' group by 1\""
        )


class QueryFilter:
    """The dedup callback Synthesis calls: near-duplicates (MiniLM) of stored/accepted queries, and
    benchmark contamination (13-grams). Thread-safe; accepted queries join the index at once."""

    def __init__(self, existing: np.ndarray | None, threshold: float, exclude: NgramIndex | None):
        from mmat.embed import Embedder

        self.embedder = Embedder.shared()
        self.threshold = threshold
        self.exclude = exclude
        self.lock = threading.Lock()
        self.matrix = existing if existing is not None and len(existing) else np.zeros((0, 384), np.float32)
        self.vectors: dict[str, np.ndarray] = {}
        self.contaminated: set[str] = set()

    @property
    def excluded(self) -> int:
        return len(self.contaminated)

    def relabel(self, result) -> None:
        """Synthesis calls every flagged query a near-duplicate; name contamination for what it is."""
        for rejection in result.duplicates:
            if rejection.query in self.contaminated:
                rejection.reason = "shares a 13-gram with a benchmark query (--exclude)"

    def __call__(self, queries: list[str]) -> list[bool]:
        from mmat.embed import near_duplicate_mask

        vectors = self.embedder.embed(queries)
        flags = []
        with self.lock:
            for query, vec in zip(queries, vectors, strict=True):
                if self.exclude is not None and self.exclude.contaminated(query):
                    self.contaminated.add(query)
                    flags.append(True)
                    continue
                dup = near_duplicate_mask(vec[None, :], self.matrix, self.threshold)[0]
                if not dup:
                    self.matrix = np.vstack([self.matrix, vec[None, :]])
                    self.vectors[query] = vec
                flags.append(dup)
        return flags


def _benchmark_index(path: Path | None) -> NgramIndex | None:
    if path is None:
        return None
    from mmat.eval import load_bench

    bench = "gaia" if path.suffix == ".jsonl" else "gta"
    report = load_bench(bench, path)
    return NgramIndex(item.question for item in report.items)


def _delete_partial_seeds(store, run_id: str, done: set[int]) -> None:
    """Rows of seeds that started but never got their 'done' marker (a kill mid-seed)."""
    partial = [r["seed_idx"] for r in store.sql(
        "SELECT DISTINCT seed_idx FROM tasks WHERE run_id = ?", [run_id]) if r["seed_idx"] not in done]
    if not partial:
        return
    tasks = "SELECT task_id FROM tasks WHERE run_id = ? AND seed_idx = ?"
    trajs = f"SELECT traj_id FROM trajectories WHERE task_id IN ({tasks})"
    where = {
        "steps": f"traj_id IN ({trajs})",
        "verdicts": f"subject_id IN ({trajs}) OR subject_id IN ({tasks})",
        "files": f"task_id IN ({tasks})",
        "trajectories": f"task_id IN ({tasks})",
        "query_embeddings": f"task_id IN ({tasks})",
        "tasks": "run_id = ? AND seed_idx = ?",
    }
    for seed_idx in partial:
        for table in SEED_TABLES:
            pairs_of_params = where[table].count("?") // 2  # every nested select takes (run_id, seed_idx)
            store.writer.execute(f"DELETE FROM {table} WHERE {where[table]}", [run_id, seed_idx] * pairs_of_params)
    store.writer.flush()


def _build_program(settings: Settings, request: SynthRequest, pool, dedup) -> Any:
    from mmat.programs.synthesis import Synthesis

    program = Synthesis(
        pool, settings=settings, tools=request.tools, n_queries=request.queries_per_seed,
        trajectories_per_task=request.trajectories_per_task, dedup=dedup,
    )
    if request.program is not None:
        from mmat.optimizers.compiled import load_compiled

        load_compiled(program, request.program)
    return program


def _seeds(settings: Settings, request: SynthRequest, tools: list[str]) -> list:
    from mmat.programs.seeds import load_domains, make_seeds

    domains = load_domains()
    if request.domains:
        known = {d.name: d for d in domains}
        unknown = [d for d in request.domains if d not in known]
        if unknown:
            raise ConfigError(f"unknown domain(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}.")
        domains = [known[d] for d in request.domains]
    return make_seeds(request.tasks, tools=tools, rng_seed=settings.seed, domains=domains)


def _resolve_tools(settings: Settings, request: SynthRequest) -> list[str]:
    from mmat.tools import agent_tools, registered_tools

    if request.tools:
        known = [t.name for t in registered_tools() if not t.final]
        unknown = [t for t in request.tools if t not in known]
        if unknown:
            raise ConfigError(f"unknown tool(s) {', '.join(unknown)}: choose from {', '.join(known)}.")
        return list(request.tools)
    return agent_tools(settings)


def run_synth(settings: Settings, request: SynthRequest, *, command: str = "mmat synth", progress: bool = True) -> SynthSummary:
    import dspy

    from mmat.lm import check_model, configure_litellm
    from mmat.runtime import open_store
    from mmat.store import LMCallRecorder, resumable_run_id

    started = time.monotonic()
    configure_litellm(settings)
    for model in {settings.teacher, settings.controller_model, settings.verifier_model}:
        check_model(model, settings)
    tools = _resolve_tools(settings, request)
    request = request.model_copy(update={"tools": tools})
    seeds = _seeds(settings, request, tools)
    exclude = _benchmark_index(request.exclude)

    with open_store(settings) as store:
        run_id = resumable_run_id("synth", request.identity(settings), "synth")
        store.start_run("synth", settings, command, run_id=run_id)
        done = {r["seed_idx"] for r in store.sql(
            "SELECT seed_idx FROM synth_seeds WHERE run_id = ? AND status = 'done'", [run_id])}
        _delete_partial_seeds(store, run_id, done)
        pending = [s for s in seeds if s.index not in done]

        pool = load_pool(store)
        existing = store.sql_arrow("SELECT embedding FROM query_embeddings").column("embedding").to_pylist()
        dedup = QueryFilter(np.asarray(existing, np.float32) if existing else None, settings.dedup_threshold, exclude)
        program = _build_program(settings, request, pool, dedup)
        recorder = LMCallRecorder(store, run_id)
        workspace_root = settings.workspaces_dir / run_id
        counts: Counter[str] = Counter()

        def work(seed):
            workspace = workspace_root / f"seed_{seed.index}"
            shutil.rmtree(workspace, ignore_errors=True)  # a redo starts clean
            with dspy.context(callbacks=[recorder]):  # pool threads do not inherit the caller's context
                return seed, program(seed, workspace)

        with ProgressBar("synth", len(pending), progress) as bar, ThreadPoolExecutor(settings.concurrency) as pool_ex:
            futures = {pool_ex.submit(work, s) for s in pending}
            try:
                while futures:
                    finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        seed, result = fut.result()
                        dedup.relabel(result)
                        rows = seed_rows(run_id, result, split=request.split, embeddings=dedup.vectors,
                                         put_blob=lambda p: store.put_blob(p, safe_suffix(p)), verifier=settings.verifier_model)
                        for table, table_rows in rows.tables.items():
                            store.writer.put(table, table_rows)
                        store.writer.flush()
                        counts.update(rows.counts)
                        if result.error:
                            counts["seed_errors"] += 1
                        store.writer.put("synth_seeds", [{
                            "run_id": run_id, "seed_idx": seed.index, "domain": seed.domain.name, "status": "done",
                            "n_specs": len(result.queries.specs) if result.queries else 0,
                            "n_tasks": len(result.tasks), "counts": dict(rows.counts) | ({"error": result.error} if result.error else {}),
                            "finished_at": utcnow(),
                        }])
                        store.writer.flush()
                        bar.advance(_live_counts(counts))
            except BaseException:
                for fut in futures:
                    fut.cancel()
                store.finish_run(run_id, "interrupted", dict(counts))
                raise

        summary = SynthSummary(
            run_id=run_id, seeds_total=len(seeds), seeds_done_before=len(done), seeds_run=len(pending),
            counts=dict(counts), excluded=dedup.excluded, seconds=time.monotonic() - started,
        )
        store.finish_run(run_id, "done", summary.model_dump(mode="json"))
    return summary


def _live_counts(counts: Counter) -> str:
    return (f"generated {counts['generated']} · files ok {counts['files_ok']} · "
            f"verified {counts['verified'] + counts['solved']} · failed {counts['failed'] + counts['rejected']}")
