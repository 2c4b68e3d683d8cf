"""The eval runner: solve every item (and its best-of-N samples) concurrently, score, store, aggregate.

Failures are kept apart as the house rules say: a ``ModelOutputError`` or ``SandboxError`` raised by the
solver is the model's (or the sandbox's) failure — the sample is recorded with the error, scored 0, and
the run goes on. Any other exception is a bug: pending work is cancelled, what finished is flushed to the
store, and the exception propagates.

Resumable by construction: the eval run ID is a hash of what defines the run (bench, file, controller,
best-of-N, item keys, settings); a rerun reuses every stored sample except those whose solve failed.
Best-of-N: ``best_of_n`` is the number of attempts per item — sample 0 is the greedy run
(the solver should use temperature 0), samples 1..best_of_n-1 are temperature samples.

An eval run is a run: it has one ``runs`` row (kind ``eval``, the same ID as its ``eval_runs`` row, which
names it in ``eval_runs.run_id``), marked done, failed or interrupted when the run ends. Each item row names
the ``task_id`` its stored trajectories carry (``eval:<eval_run_id>:<item_key>``), so they join.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from mmat.config import Settings
from mmat.errors import ConfigError, ModelOutputError, SandboxError
from mmat.eval.items import EvalItem
from mmat.eval.metrics import EvalMetrics, aggregate, summary_line
from mmat.eval.outcome import AgentOutcome
from mmat.eval.results import ItemResult, Scoring, score_failure, score_outcome
from mmat.ids import content_id

__all__ = ["run_eval", "EvalRunResult", "Solver", "eval_run_id_for", "eval_task_id"]

Solver = Callable[[EvalItem, int], AgentOutcome]

# Settings that change where or how fast a run happens, not what it measures: left out of the run ID.
_ID_NEUTRAL_SETTINGS = ("home", "concurrency")


class _Writer(Protocol):
    def put(self, table: str, rows: list[dict[str, Any]]) -> None: ...

    def flush(self) -> None: ...


class _StoreLike(Protocol):
    writer: _Writer

    def sql(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]: ...


class EvalRunResult(BaseModel):
    """What run_eval returns: the run's ID, its metrics, every scored sample and a one-line summary."""

    eval_run_id: str
    bench: str
    n_items: int
    best_of_n: int
    metrics: EvalMetrics
    results: list[ItemResult]
    resumed: int
    summary: str


def eval_task_id(eval_run_id: str, item_key: str) -> str:
    """The task_id of an eval item's trajectories (and of its eval_items rows)."""
    return f"eval:{eval_run_id}:{item_key}"


def eval_run_id_for(
    items: Sequence[EvalItem], *, bench: str, bench_path: str | Path, controller: str, best_of_n: int,
    settings: Settings | None,
) -> str:
    """The content ID of an eval run: same definition, same ID, so a rerun resumes instead of duplicating."""
    record = {k: v for k, v in (settings.to_record() if settings else {}).items() if k not in _ID_NEUTRAL_SETTINGS}
    return content_id("eval", bench, str(bench_path), controller, best_of_n, sorted(i.key for i in items), record)


def run_eval(
    items: Sequence[EvalItem],
    solve: Solver,
    *,
    store: _StoreLike,
    bench: str,
    bench_path: str | Path,
    controller: str,
    best_of_n: int = 1,
    concurrency: int = 1,
    settings: Settings | None = None,
    eval_run_id: str | None = None,
    resume: bool = True,
    progress: bool = True,
    scoring: Scoring | None = None,
    embedding_model: str | None = None,
    judge_model: str | None = None,
    command: str | None = None,
) -> EvalRunResult:
    """Evaluate ``solve`` on ``items``; writes runs/eval_runs/eval_items rows and returns the metrics.

    ``scoring`` brings the embedding similarity (GTA subjective items) and the judge (Agent-X); their names
    (``embedding_model``, ``judge_model``) are recorded in the metrics."""
    from mmat.store.runs import run_lifecycle, settings_record

    _check_args(items, best_of_n, concurrency)
    run_id = eval_run_id or eval_run_id_for(
        items, bench=bench, bench_path=bench_path, controller=controller, best_of_n=best_of_n, settings=settings
    )
    record = settings_record(settings) if settings else {}
    run_settings = {**record, "bench": bench, "bench_path": str(bench_path), "controller": controller,
                    "best_of_n": best_of_n, "judge": judge_model, "embedding_model": embedding_model}
    with run_lifecycle(store, "eval", run_settings, command or f"mmat eval --bench {bench_path}", run_id=run_id,
                       progress=progress) as run:
        run_row = {
            "eval_run_id": run_id, "run_id": run_id, "bench": bench, "bench_path": str(bench_path),
            "controller": controller, "best_of_n": best_of_n, "settings": record or None, "n_items": len(items),
            "metrics": None, "created_at": _created_at(store, run_id),
        }
        store.writer.put("eval_runs", [run_row])
        by_key = {item.key: item for item in items}
        done = _stored_results(store, run_id, by_key, best_of_n) if resume else {}
        todo = [(item, s) for item in items for s in range(best_of_n) if (item.key, s) not in done]
        run.summary = {"n_items": len(items), "resumed": len(done)}
        fresh = _solve_all(todo, solve, store, run, bench, concurrency, scoring or Scoring())
        order = {item.key: i for i, item in enumerate(items)}
        results = sorted([*done.values(), *fresh], key=lambda r: (order[r.item_key], r.sample_idx))
        metrics = aggregate(bench, items, results, best_of_n, embedding_model=embedding_model, judge=judge_model)
        store.writer.put("eval_runs", [{**run_row, "metrics": metrics.model_dump(mode="json")}])
        store.writer.flush()
        run.summary = {"summary": summary_line(metrics), "n_items": len(items), "errors": metrics.greedy.n_errors,
                       "resumed": len(done)}
    return EvalRunResult(
        eval_run_id=run_id, bench=bench, n_items=len(items), best_of_n=best_of_n, metrics=metrics,
        results=results, resumed=len(done), summary=summary_line(metrics),
    )


def _check_args(items: Sequence[EvalItem], best_of_n: int, concurrency: int) -> None:
    if not items:
        raise ConfigError("no items to evaluate: the loader skipped every item (see its report) or the split is empty.")
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"duplicate item keys {dupes[:5]}: give each benchmark item a unique key.")
    if best_of_n < 1:
        raise ConfigError(f"best_of_n must be at least 1 (got {best_of_n}): pass --best-of-n 1 for greedy only.")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1 (got {concurrency}): set MMAT_CONCURRENCY or --concurrency.")


def _created_at(store: _StoreLike, run_id: str) -> datetime:
    rows = store.sql("SELECT created_at FROM eval_runs WHERE eval_run_id = ?", [run_id])
    if rows and rows[0]["created_at"] is not None:
        return rows[0]["created_at"]
    return datetime.now(UTC).replace(tzinfo=None)


def _stored_results(
    store: _StoreLike, run_id: str, by_key: dict[str, EvalItem], best_of_n: int
) -> dict[tuple[str, int], ItemResult]:
    rows = store.sql("SELECT * FROM eval_items WHERE eval_run_id = ?", [run_id])
    done: dict[tuple[str, int], ItemResult] = {}
    for row in rows:
        item = by_key.get(row["item_key"])
        if item is None or row["sample_idx"] >= best_of_n:
            continue
        result = ItemResult.from_row(row, item)
        if not result.solve_failed:
            done[(item.key, result.sample_idx)] = result
    return done


def _attempt(solve: Solver, run_id: str, item: EvalItem, sample_idx: int, scoring: Scoring) -> ItemResult:
    task_id = eval_task_id(run_id, item.key)
    try:
        outcome = solve(item, sample_idx)
    except (ModelOutputError, SandboxError) as e:
        return score_failure(run_id, item, sample_idx, e, scoring=scoring, task_id=task_id)
    if not isinstance(outcome, AgentOutcome):
        raise TypeError(f"solve() returned {type(outcome).__name__}; it must return an AgentOutcome")
    return score_outcome(run_id, item, sample_idx, outcome, scoring=scoring, task_id=task_id)


def _solve_all(
    todo: list[tuple[EvalItem, int]], solve: Solver, store: _StoreLike, run: Any, bench: str, concurrency: int,
    scoring: Scoring,
) -> list[ItemResult]:
    """Solve and score every (item, sample) on a thread pool; each result row is written as it lands, so an
    interrupted run resumes from what finished. Progress goes to the run's display (stderr)."""
    results: list[ItemResult] = []
    with run.progress(f"eval {bench}", len(todo)) as bar, ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures: list[Future[ItemResult]] = [pool.submit(_attempt, solve, run.run_id, item, s, scoring)
                                             for item, s in todo]
        try:
            for future in as_completed(futures):
                result = future.result()
                store.writer.put("eval_items", [result.to_row()])
                results.append(result)
                errors = sum(bool(r.error_kind) or r.solve_failed for r in results)
                bar.advance(f"{errors} errors" if errors else "")
        except BaseException:
            for f in futures:
                f.cancel()
            store.writer.flush()  # keep what finished: a rerun resumes from it
            raise
    return results
