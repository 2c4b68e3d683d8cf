"""`mmat synth`: run the Synthesis program over many seeds, in parallel, into the store.

Concurrency: the stages of all seeds interleave on threads (``mmat.pipeline.scheduler``), in this process
(``executor="local"``), in worker processes forked at the start (``"process"``,
``mmat.pipeline.process_executor``: mmat's own CPU work spread over the cores) or on Ray (``"ray"``). Every
LM request of a local or process run takes a slot of the run's one gate; rows are written only from the
calling thread through the store's single writer, whichever executor ran the seed.

Resume: the run ID is a hash of what the run was asked to make (models, tools, domains, split,
trajectories per task, seed, compiled program), not of how (concurrency, count). A seed is marked
done in ``synth_seeds`` only after all its rows are flushed. A rerun skips done seeds and first
deletes whatever rows an interrupted seed left behind, so after any ``kill -9`` the counts come out
exact and nothing is duplicated.

Failures (``mmat.pipeline.failures``): a seed whose LM stage runs out of retries, or whose reply cannot
be read, is stored as ``failed`` (``synth_seeds.error_code``/``error``; its ``lm_calls`` rows carry the
error) and the run goes on; a rerun retries it unless ``retry_failed`` is off. Ctrl-C
(``mmat.pipeline.interrupt``) stops scheduling, abandons in-flight seeds (written never, redone on
rerun), records the run as interrupted and raises SynthInterrupted.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from mmat.config import Settings
from mmat.decontam import NgramIndex
from mmat.errors import ConfigError, MmatError, ModelUnavailableError
from mmat.ids import sha256_file
from mmat.pipeline.failures import (
    FRESH_ON_RETRY, VOCABULARY, classify, exit_status, failure_record, live_line, seeds_to_run, task_outcome, top_reasons,
    unparsable_failure,
)
from mmat.pipeline.interrupt import StopOnInterrupt
from mmat.pipeline.progress import lm_line, lm_summary_line, stats_record
from mmat.pipeline.scheduler import EmbedBatcher, SeedOutcome, SeedScheduler, budget_error, unit_threads
from mmat.store.blobs import safe_suffix
from mmat.store.pool_images import load_pool
from mmat.store.rows import attribute_seed_calls, delete_partial_seeds, finished_query_embeddings, seed_rows
from mmat.store.runs import utcnow
from mmat.store.schema import EMBED_DIM

__all__ = ["SynthRequest", "SynthSummary", "SynthInterrupted", "run_synth", "preflight", "EXIT_BUDGET"]

EXIT_BUDGET = 3  # the exit status of a run stopped by --max-calls / --max-cost (rerun to continue)
BUDGET_REASONS = ("max_calls", "max_cost")


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
    # how, not what: not part of the run ID (a run started locally can be continued on Ray and back)
    executor: Literal["local", "process", "ray"] = "local"
    ray_address: str | None = None
    workers: int | None = None
    max_calls: int | None = None  # LM requests sent (cache hits are free); None: no limit
    max_cost: float | None = None  # USD, as litellm prices the replies; None: no limit

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
    status: str = "done"  # done | interrupted | budget | failed (by a fatal error)
    seeds_failed: int = 0
    seeds_skipped_failed: int = 0  # failed on an earlier run and not retried (--no-retry-failed)
    failure_codes: dict[str, int] = {}
    outcomes: dict[str, int] = {}  # the shared vocabulary (mmat.pipeline.failures.VOCABULARY)
    exit_code: int = 0
    stop_reason: str | None = None  # why a budget ended the run, in words
    error: str | None = None  # the fatal error that stopped the run
    lm: dict[str, Any] = {}  # the LM gate at the end: calls, throttled, tokens, cost, limit, limit_history

    def render(self) -> str:
        c = Counter(self.counts)
        before = f"{self.seeds_done_before} already done"
        if self.seeds_skipped_failed:
            before += f", {self.seeds_skipped_failed} failed before and not retried"
        verb = {"interrupted": "interrupted after", "budget": "run before the budget ran out"}.get(self.status, "run")
        line = (f"synth {self.run_id}: {self.seeds_run} seed(s) {verb} ({before}) in {self.seconds:.1f}s — "
                + ", ".join(f"{name} {self.outcomes.get(name, 0)}" for name in VOCABULARY)
                + f"; {c['files_ok']} with files, {c['trajectories']} trajectories ({c['trajectories_correct']} correct)")
        if self.excluded:
            line += f", {self.excluded} dropped for a 13-gram overlap with the benchmark"
        if self.seeds_failed:
            reasons = top_reasons(Counter(self.failure_codes))
            line += f"\n{self.seeds_failed} seed(s) failed by error ({reasons}): rerun the same command to retry them"
            line += (f"\nwhy: mmat sql \"select seed_idx, error_code, error from synth_seeds where run_id = '{self.run_id}' "
                     "and status = 'failed'\"")
        if self.lm:
            line += "\n" + lm_summary_line(self.lm)
        if self.status == "interrupted":
            line += "\nunfinished seeds are marked for resume: rerun the same command to continue"
        if self.status == "budget":
            line += f"\n{self.stop_reason}: unfinished seeds are marked for resume"
        return line + (
            f"\nlook at them: mmat sql \"select status, count(*) from tasks where run_id = '{self.run_id}' group by 1\""
        )


class SynthInterrupted(MmatError):
    """Ctrl-C stopped the run: what was complete is stored, the rest resumes on rerun."""

    def __init__(self, summary: SynthSummary):
        super().__init__(summary.render().splitlines()[0])
        self.summary = summary


class QueryFilter:
    """The dedup callback Synthesis calls: near-duplicates (MiniLM) of stored/accepted queries, and
    benchmark contamination (13-grams). Thread-safe; accepted queries join the index at once."""

    def __init__(self, existing: np.ndarray | None, threshold: float, exclude: NgramIndex | None, *, embedder=None):
        from mmat.embed import Embedder

        self.embedder = embedder or Embedder.shared()
        self.threshold = threshold
        self.exclude = exclude
        self.lock = threading.Lock()
        self.matrix = existing if existing is not None and len(existing) else np.zeros((0, EMBED_DIM), np.float32)
        self.vectors: dict[str, np.ndarray] = {}
        self.contaminated: set[str] = set()

    @property
    def excluded(self) -> int:
        return len(self.contaminated)

    def absorb(self, vectors: dict[str, Any], contaminated: list[str]) -> None:
        """Take what another process's filter decided (a Ray worker's seed): accepted vectors, contaminated queries."""
        with self.lock:
            for query, vec in vectors.items():
                self.vectors[query] = np.asarray(vec, np.float32)
            self.contaminated.update(contaminated)

    def relabel(self, result) -> None:
        """Synthesis calls every flagged query a near-duplicate; name contamination for what it is."""
        for rejection in result.duplicates:
            if rejection.query in self.contaminated:
                rejection.reason = "shares a 13-gram with a benchmark query (--exclude)"

    def __call__(self, queries: list[str]) -> list[bool]:
        return self.decide(queries, self.embedder.embed(queries))

    def decide(self, queries: list[str], vectors: Any) -> list[bool]:
        """Flag each query (with its embedding, computed by the caller) a near-duplicate or contaminated;
        the others join the index. A worker process embeds its queries and asks the driver's filter this."""
        from mmat.embed import near_duplicate_mask

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


def build_program(settings: Settings, request: SynthRequest, pool, dedup, *, announce: bool = True) -> Any:
    """The run's Synthesis program (with the compiled program loaded, if any) — one per process. ``announce``:
    say on stderr which compiled program was loaded (the driver does; its workers do not repeat it)."""
    from mmat.programs.synthesis import Synthesis

    program = Synthesis(
        pool, settings=settings, tools=request.tools, n_queries=request.queries_per_seed,
        trajectories_per_task=request.trajectories_per_task, dedup=dedup,
    )
    if request.program is not None:
        from mmat.optimizers.compiled import describe_loaded, load_compiled

        target = load_compiled(program, request.program)
        if announce:
            print(describe_loaded(request.program, target), file=sys.stderr, flush=True)
    return program


def run_seed(program: Any, seed: Any, workspace: Path, recorder: Any, redo: int = 0) -> Any:
    """One seed through ``program`` with its LM calls recorded; the workspace starts clean (a redo too).

    ``redo`` > 0 asks afresh past the LM cache (replies that could not be read would come back from it).
    The same function runs in the local thread pool and in a Ray worker.
    """
    import dspy

    from mmat.lm import fresh_replies

    shutil.rmtree(workspace, ignore_errors=True)
    with dspy.context(callbacks=[recorder]), fresh_replies(redo):  # pool threads do not inherit the caller's context
        return program(seed, workspace)


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


SYNTH_ROLES = ("teacher", "controller", "verifier")


def preflight(settings: Settings, command: str) -> dict[str, str]:
    """Check every role's model (and its server) before any work; returns the structured-output mode each
    role runs with (recorded in the run's settings)."""
    from mmat.lm import check_model, structured_mode

    modes: dict[str, str] = {}
    checked: set[str] = set()
    for role in SYNTH_ROLES:
        model = settings.role_model(role)
        if model not in checked:
            check_model(model, settings, role=role, command=command)
            checked.add(model)
        modes[role] = structured_mode(model, settings, role)
    return modes


def _seed_statuses(store, run_id: str) -> dict[int, dict[str, Any]]:
    return {r["seed_idx"]: r for r in store.sql(
        "SELECT seed_idx, status, error_code, coalesce(attempts, 1) AS attempts FROM synth_seeds WHERE run_id = ?",
        [run_id])}


def _tick(gate: Any, outcomes: Counter[str]) -> str:
    line = live_line(outcomes)
    return line if gate is None else f"{line} · {lm_line(gate.snapshot())}"


def run_synth(settings: Settings, request: SynthRequest, *, command: str = "mmat synth", progress: bool = True,
              retry_failed: bool = True) -> SynthSummary:
    """Synthesize ``request`` into the store. A seed whose LM stage runs out of retries (or whose reply
    cannot be read) is stored as ``failed`` with its reason and the run goes on; failed seeds are retried
    on rerun (``retry_failed``). A failure the user must fix (a 4xx, a missing key) stops the run with
    ModelUnavailableError. Ctrl-C stops it with SynthInterrupted (what is complete stays stored). A budget
    (``request.max_calls``/``max_cost``) that runs out ends the run with status ``budget`` and
    ``exit_code`` EXIT_BUDGET: the seeds complete by then are stored, the rest resume on rerun."""
    from mmat.lm import configure_litellm

    started = time.monotonic()
    if request.executor == "ray" and (request.max_calls is not None or request.max_cost is not None):
        raise ConfigError("--max-calls and --max-cost count the LM calls of this process: they work with "
                          "--executor local or process")
    configure_litellm(settings)
    workers = None
    if request.executor == "process":  # forked before this process opens a connection or starts a thread
        from mmat.pipeline.process_executor import ProcessExecutor, default_workers

        workers = ProcessExecutor.fork(request.workers or default_workers(settings.concurrency), settings)
    try:
        return _run_synth(settings, request, command=command, progress=progress, retry_failed=retry_failed,
                          started=started, workers=workers)
    finally:
        if workers is not None:
            workers.close()


def _run_synth(settings: Settings, request: SynthRequest, *, command: str, progress: bool, retry_failed: bool,
               started: float, workers) -> SynthSummary:
    from mmat.lm_gate import LMGate, use_gate
    from mmat.store import LMCallRecorder, open_store, resumable_run_id, run_lifecycle

    modes = preflight(settings, command)
    tools = _resolve_tools(settings, request)
    request = request.model_copy(update={"tools": tools})
    seeds = _seeds(settings, request, tools)
    exclude = _benchmark_index(request.exclude)

    with open_store(settings) as store:
        run_id = resumable_run_id("synth", request.identity(settings), "synth")
        # the program (and a --program file) first: a refused file must not leave a run marked running
        embedder = EmbedBatcher()
        pool = load_pool(store, embedder=embedder)
        existing = finished_query_embeddings(store)
        dedup = QueryFilter(np.asarray(existing, np.float32) if existing else None, settings.dedup_threshold, exclude,
                            embedder=embedder)
        program = build_program(settings, request, pool, dedup)
        record = settings.to_record() | {"structured_output_resolved": modes}
        with run_lifecycle(store, "synth", record, command, run_id=run_id, progress=progress) as handle:
            final = _drive(settings, request, store, run_id, seeds, program, pool, dedup, handle, started,
                           retry_failed=retry_failed, gate=None if request.executor == "ray" else LMGate(
                               settings.concurrency, max_calls=request.max_calls, max_cost=request.max_cost),
                           use_gate=use_gate, recorder=LMCallRecorder(store, run_id), progress=progress,
                           command=command, workers=workers)
            if workers is not None:  # before the store closes: their last rows are written
                workers.close()
    if final.status == "failed" and final.error:
        raise ModelUnavailableError(final.error)
    if final.status == "interrupted":
        raise SynthInterrupted(final)
    return final


def _drive(settings: Settings, request: SynthRequest, store, run_id: str, seeds: list, program, pool, dedup, handle,
           started: float, *, retry_failed: bool, gate, use_gate, recorder, progress: bool, command: str,
           workers=None) -> SynthSummary:
    """Schedule the seeds still to do, write each one that ends, and fill ``handle`` (the run's row)."""
    stored = _seed_statuses(store, run_id)
    done = {i for i, r in stored.items() if r["status"] == "done"}
    delete_partial_seeds(store, run_id, done)
    todo, done_before, skipped = seeds_to_run({i: r["status"] for i, r in stored.items()}, [s.index for s in seeds],
                                              retry_failed=retry_failed)
    pending = [s for s in seeds if s.index in set(todo)]
    workspace_root = settings.workspaces_dir / run_id
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    failure_codes: Counter[str] = Counter()
    seeds_run = 0

    def redo_of(seed) -> int:
        # replies that could not be read would come back from the cache: a redo asks afresh
        previous = stored.get(seed.index, {})
        return previous.get("attempts", 0) if previous.get("error_code") in FRESH_ON_RETRY else 0

    def record_done(seed, result) -> None:
        dedup.relabel(result)
        rows = seed_rows(run_id, result, split=request.split, embeddings=dedup.vectors,
                         put_blob=lambda p: store.put_blob(p, safe_suffix(p)), verifier=settings.verifier_model)
        for table, table_rows in rows.tables.items():
            store.writer.put(table, table_rows)
        attribute_seed_calls(store, run_id, seed.index)  # query generation's calls name the seed's first task
        store.writer.flush()
        seed_outcomes = Counter(o for o in map(task_outcome, rows.tables.get("tasks", [])) if o)
        seed_outcomes["generated"] += rows.counts["generated"]
        counts.update(rows.counts)
        outcomes.update(seed_outcomes)
        store.writer.put("synth_seeds", [{
            "run_id": run_id, "seed_idx": seed.index, "domain": seed.domain.name, "status": "done",
            "n_specs": len(result.queries.specs) if result.queries else 0, "n_tasks": len(result.tasks),
            "counts": {name: seed_outcomes[name] for name in VOCABULARY}, "error_code": None, "error": None,
            "attempts": stored.get(seed.index, {}).get("attempts", 0) + 1, "finished_at": utcnow(),
        }])
        store.writer.flush()

    def record_failed(seed, failure) -> None:
        attempts = stored.get(seed.index, {}).get("attempts", 0) + 1
        store.writer.put("synth_seeds", [failure_record(run_id, seed, failure, utcnow(), attempts)])
        store.writer.flush()
        counts["seeds_failed"] += 1
        outcomes["failed-by-error"] += 1
        failure_codes[failure.code] += 1

    def summary(status: str, *, stop_reason: str | None = None, fatal: str | None = None) -> SynthSummary:
        produced = outcomes["generated"]
        exit_code = exit_status(seeds_run, counts["seeds_failed"], produced, settings.max_failed_share)
        return SynthSummary(
            run_id=run_id, seeds_total=len(seeds), seeds_done_before=done_before, seeds_run=seeds_run,
            counts=dict(counts), excluded=dedup.excluded, seconds=time.monotonic() - started, status=status,
            seeds_failed=counts["seeds_failed"], seeds_skipped_failed=skipped, failure_codes=dict(failure_codes),
            outcomes={name: outcomes[name] for name in VOCABULARY},
            exit_code=EXIT_BUDGET if status == "budget" else (1 if fatal else exit_code), stop_reason=stop_reason,
            error=fatal, lm=stats_record(gate.snapshot()) | {
                "concurrency": settings.concurrency, "max_calls": request.max_calls, "max_cost": request.max_cost,
            } if gate is not None else {},
        )

    def start_work() -> tuple[queue.Queue[SeedOutcome], Any, Any]:
        """Schedule every pending seed: (where ended seeds arrive, stop scheduling, wait until the units in flight
        have ended (None on Ray, which has no budgets))."""
        if request.executor == "ray":
            from mmat.pipeline.ray_executor import RayExecutor

            inbox: queue.Queue[SeedOutcome] = queue.Queue()
            executor = RayExecutor(settings, request, pool=pool, dedup=dedup, store=store, run_id=run_id,
                                   address=request.ray_address, workers=request.workers)

            def deliver(fut, seed) -> None:
                error = fut.exception() if not fut.cancelled() else None
                inbox.put(SeedOutcome(seed, result=None if error or fut.cancelled() else fut.result(), error=error,
                                      abandoned=fut.cancelled()))

            for seed in pending:
                executor.submit(seed, workspace_root / f"seed_{seed.index}", redo_of(seed)).add_done_callback(
                    lambda fut, seed=seed: deliver(fut, seed))
            return inbox, lambda: executor.shutdown(wait=False, cancel_futures=True), None
        if workers is not None:
            workers.start(request=request, gate=gate, dedup=dedup, pool=pool, store=store, run_id=run_id,
                          threads=workers.unit_threads(settings.concurrency), command=command)
            for order, seed in enumerate(pending):
                workers.submit(seed, workspace_root / f"seed_{seed.index}", order=order, redo=redo_of(seed))
            return workers.outcomes, workers.stop, workers.wait_idle
        scheduler = SeedScheduler(program, recorder, threads=unit_threads(settings.concurrency), tools=request.tools)
        for order, seed in enumerate(pending):
            scheduler.submit(seed, workspace_root / f"seed_{seed.index}", order=order, redo=redo_of(seed))
        return scheduler.outcomes, scheduler.stop, scheduler.pool.wait_idle

    fatal = None
    budget = None
    remaining = len(pending)

    def take(outcome: SeedOutcome) -> None:
        nonlocal seeds_run, fatal, budget
        if outcome.abandoned:
            refused = budget_error(outcome.error) if outcome.error is not None else None
            if refused is not None and refused.reason in BUDGET_REASONS and budget is None:
                budget = refused.reason
            return
        if outcome.failure is not None or outcome.error is not None:
            # classify re-raises anything that is not an LM failure; a worker process sends it classified
            failure = outcome.failure or classify(outcome.error, settings, command)
            if failure.fatal:
                fatal = failure
                return
            record_failed(outcome.seed, failure)
        elif outcome.result.error:  # the program caught an unreadable reply of its first stage
            record_failed(outcome.seed, unparsable_failure(outcome.result.error))
        else:
            record_done(outcome.seed, outcome.result)
        seeds_run += 1

    stop_work = lambda: None  # noqa: E731
    # the gate and the Ctrl-C handler first: no unit may send a request (or be interrupted) before they are in place
    lm_scope = use_gate(gate) if gate is not None else contextlib.nullcontext()
    with lm_scope, StopOnInterrupt("synth") as stop, handle.progress("synth", len(pending)) as bar:
        try:
            inbox, stop_work, wait_idle = start_work()
            while remaining and not stop.requested and fatal is None and budget is None:
                try:
                    outcome = inbox.get(timeout=0.25)
                except queue.Empty:
                    bar.describe(_tick(gate, outcomes))
                    continue
                remaining -= 1
                before = seeds_run
                take(outcome)
                bar.advance(_tick(gate, outcomes), steps=seeds_run - before)
            if budget is not None:  # in-flight calls finish (their replies are cached); complete seeds are kept
                stop_work()
                gate.close(budget)
                while not wait_idle(0.25):
                    bar.describe(_tick(gate, outcomes))
                while not inbox.empty():
                    before = seeds_run
                    take(inbox.get())
                    bar.advance(_tick(gate, outcomes), steps=seeds_run - before)
        except BaseException:
            handle.summary = summary("failed").model_dump(mode="json")  # the lifecycle adds the reason
            raise
        finally:
            stop_work()  # seeds still in flight are abandoned, never written
            if gate is not None:
                gate.close("the run is over")
    if fatal is not None:
        final = summary("failed", fatal=fatal.message)
        handle.status, handle.summary = "failed", final.model_dump(mode="json")
    elif stop.requested:
        final = summary("interrupted")
        handle.status, handle.summary = "interrupted", final.model_dump(mode="json")
    elif budget is not None:
        final = summary("budget", stop_reason=_budget_words(budget, request, gate))
        handle.status, handle.summary = "interrupted", final.model_dump(mode="json")
    else:
        final = summary("done")
        handle.status, handle.summary = ("failed" if final.exit_code else "done"), final.model_dump(mode="json")
    return final


def _budget_words(reason: str, request: SynthRequest, gate) -> str:
    stats = gate.snapshot()
    if reason == "max_calls":
        return f"budget reached: {stats.calls} calls; rerun without --max-calls to continue"
    return (f"budget reached: ${stats.cost:.4f} spent of ${request.max_cost:g}; rerun without --max-cost (or with a "
            "higher one) to continue")
