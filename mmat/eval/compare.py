"""Compare two stored eval runs metric by metric (e.g. the untuned controller against a tuned student)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel

from mmat.errors import ConfigError
from mmat.eval.metrics import EvalMetrics, GroupMetrics

__all__ = ["MetricDelta", "compare_runs", "flatten_metrics", "load_metrics"]


class _StoreLike(Protocol):
    def sql(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]: ...


class MetricDelta(BaseModel):
    """One figure of two runs; delta = b - a (None when either run lacks the figure)."""

    metric: str
    a: float | None
    b: float | None
    delta: float | None


_GROUP_FIGURES = ("tool_precision", "tool_recall", "tool_exact", "code_exec", "mean_steps", "n_errors")


def _group_figures(prefix: str, group: GroupMetrics) -> dict[str, float | None]:
    figures: dict[str, float | None] = {f"{prefix}.ans_acc.{name}": acc.value for name, acc in group.ans_acc.items()}
    for name in _GROUP_FIGURES:
        value = getattr(group, name)
        figures[f"{prefix}.{name}"] = None if value is None else float(value)
    return figures


def flatten_metrics(metrics: EvalMetrics) -> dict[str, float | None]:
    """Metric name -> value, in display order: greedy, best-of-N, then per level."""
    figures: dict[str, float | None] = {"n_items": float(metrics.n_items), "counted": float(metrics.counted)}
    figures.update(_group_figures("greedy", metrics.greedy))
    for name, acc in (metrics.best_of_n_ans_acc or {}).items():
        figures[f"best_of_{metrics.best_of_n}.ans_acc.{name}"] = acc.value
    for level, group in metrics.by_level.items():
        figures.update({k: v for k, v in _group_figures(f"level_{level}", group).items() if ".ans_acc." in k})
        for name, acc in metrics.best_of_n_by_level.get(level, {}).items():
            figures[f"level_{level}.best_of_{metrics.best_of_n}.ans_acc.{name}"] = acc.value
    return figures


def load_metrics(store: _StoreLike, eval_run_id: str) -> EvalMetrics:
    """The stored metrics of one eval run; ConfigError when the run is unknown or did not finish."""
    rows = store.sql("SELECT metrics FROM eval_runs WHERE eval_run_id = ?", [eval_run_id])
    if not rows:
        raise ConfigError(
            f"no eval run {eval_run_id!r} in the store: list them with "
            "`mmat sql \"SELECT eval_run_id, bench, controller, created_at FROM eval_runs\"`."
        )
    raw = rows[0]["metrics"]
    if raw is None:
        raise ConfigError(f"eval run {eval_run_id!r} has no metrics (it did not finish): rerun the same eval to resume it.")
    return EvalMetrics.model_validate(json.loads(raw) if isinstance(raw, str) else raw)


def compare_runs(store: _StoreLike, run_a: str, run_b: str) -> list[MetricDelta]:
    """Every figure of either run, a next to b, with b - a where both have it."""
    a = flatten_metrics(load_metrics(store, run_a))
    b = flatten_metrics(load_metrics(store, run_b))
    names = list(a) + [name for name in b if name not in a]
    deltas: list[MetricDelta] = []
    for name in names:
        va, vb = a.get(name), b.get(name)
        deltas.append(MetricDelta(metric=name, a=va, b=vb, delta=None if va is None or vb is None else vb - va))
    return deltas
