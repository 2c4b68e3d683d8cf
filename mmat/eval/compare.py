"""Compare two stored eval runs metric by metric (e.g. the untuned controller against a tuned student).

Runs are named by their ``eval_run_id`` (``mmat runs`` and ``eval_runs`` list them) or any unique prefix of
it. The comparison lists each run's bench, controller and judge, the settings that differ between them, and
every figure of either run with delta = B - A.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel, Field

from mmat.errors import ConfigError
from mmat.eval.metrics import EvalMetrics, GroupMetrics

__all__ = ["MetricDelta", "RunInfo", "SettingDiff", "Comparison", "compare_runs", "flatten_metrics", "load_metrics",
           "resolve_eval_run_id"]

# settings that never change what a run measures: not worth listing as a difference
_QUIET_SETTINGS = frozenset({"home", "concurrency"})


class _StoreLike(Protocol):
    def sql(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]: ...


class MetricDelta(BaseModel):
    """One figure of two runs; delta = b - a (None when either run lacks the figure)."""

    metric: str
    a: float | None
    b: float | None
    delta: float | None


class RunInfo(BaseModel):
    eval_run_id: str
    bench: str | None
    bench_path: str | None
    controller: str | None
    judge: str | None = None
    embedding_model: str | None = None
    n_items: int | None
    created_at: str | None


class SettingDiff(BaseModel):
    key: str
    a: Any
    b: Any


class Comparison(BaseModel):
    """Run A, run B, what differs in their settings, and each figure with B - A."""

    a: RunInfo
    b: RunInfo
    settings_diff: list[SettingDiff] = Field(default_factory=list)
    deltas: list[MetricDelta]


_GROUP_FIGURES = ("tool_precision", "tool_recall", "tool_exact", "tool_empty_gold", "code_exec", "mean_steps", "n_errors")


def _group_figures(prefix: str, group: GroupMetrics) -> dict[str, float | None]:
    figures: dict[str, float | None] = {f"{prefix}.ans_acc.{name}": acc.value for name, acc in group.ans_acc.items()}
    for name in _GROUP_FIGURES:
        value = getattr(group, name)
        figures[f"{prefix}.{name}"] = None if value is None else float(value)
    for kind, n in group.errors_by_kind.items():
        figures[f"{prefix}.errors.{kind}"] = float(n)
    return figures


def flatten_metrics(metrics: EvalMetrics) -> dict[str, float | None]:
    """Metric name -> value, in display order: greedy, best-of-N, per level, GTA's and Agent-X's figures."""
    figures: dict[str, float | None] = {"n_items": float(metrics.n_items), "counted": float(metrics.counted)}
    figures.update(_group_figures("greedy", metrics.greedy))
    for name, acc in (metrics.best_of_n_ans_acc or {}).items():
        figures[f"best_of_{metrics.best_of_n}.ans_acc.{name}"] = acc.value
    for level, group in metrics.by_level.items():
        figures.update({k: v for k, v in _group_figures(f"level_{level}", group).items() if ".ans_acc." in k})
        for name, acc in metrics.best_of_n_by_level.get(level, {}).items():
            figures[f"level_{level}.best_of_{metrics.best_of_n}.ans_acc.{name}"] = acc.value
    if metrics.gta is not None:
        for category, score in metrics.gta.tool_f1.items():
            figures[f"gta.tool_f1.{category}"] = score.f1
        acc = metrics.gta.ans_acc_with_imggen
        figures["gta.ans_acc_with_imggen"] = acc.value if acc else None
    if metrics.agentx is not None:
        for name, mean in metrics.agentx.metrics.items():
            figures[f"agentx.{name}"] = mean.value
        figures["agentx.Ts_acc_set_f1"] = metrics.agentx.toolset_f1_set.value
    return figures


def resolve_eval_run_id(store: _StoreLike, ref: str) -> str:
    """The eval_run_id that ``ref`` is, or that ``ref`` uniquely begins; ConfigError otherwise."""
    ref = ref.strip()
    if not ref:
        raise ConfigError("an empty eval run id: pass an eval_run_id (or a unique prefix) from `mmat runs`.")
    rows = store.sql("SELECT eval_run_id FROM eval_runs WHERE starts_with(eval_run_id, ?) ORDER BY eval_run_id", [ref])
    ids = [r["eval_run_id"] for r in rows]
    if ref in ids:
        return ref
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise ConfigError(
            f"no eval run {ref!r} in the store (eval compare takes eval_run_ids or unique prefixes): list them with "
            "`mmat sql \"SELECT eval_run_id, bench, controller, created_at FROM eval_runs\"`."
        )
    shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
    raise ConfigError(f"eval run prefix {ref!r} matches {len(ids)} runs ({shown}): give more characters.")


def _row(store: _StoreLike, eval_run_id: str) -> dict[str, Any]:
    return store.sql("SELECT * FROM eval_runs WHERE eval_run_id = ?", [eval_run_id])[0]


def load_metrics(store: _StoreLike, eval_run_id: str) -> EvalMetrics:
    """The stored metrics of one eval run (id or unique prefix); ConfigError when unknown or unfinished."""
    run_id = resolve_eval_run_id(store, eval_run_id)
    raw = _row(store, run_id)["metrics"]
    if raw is None:
        raise ConfigError(f"eval run {run_id!r} has no metrics (it did not finish): rerun the same eval to resume it.")
    return EvalMetrics.model_validate(json.loads(raw) if isinstance(raw, str) else raw)


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("settings")
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


def _info(row: dict[str, Any], metrics: EvalMetrics) -> RunInfo:
    created = row.get("created_at")
    return RunInfo(
        eval_run_id=row["eval_run_id"], bench=row.get("bench"), bench_path=row.get("bench_path"),
        controller=row.get("controller"), n_items=row.get("n_items"),
        judge=metrics.agentx.judge if metrics.agentx else None,
        embedding_model=metrics.gta.embedding_model if metrics.gta else None,
        created_at=created.isoformat(sep=" ", timespec="seconds") if hasattr(created, "isoformat") else created,
    )


def compare_runs(store: _StoreLike, run_a: str, run_b: str) -> Comparison:
    """Every figure of either run, A next to B, with B - A where both have it, and the settings that differ."""
    id_a, id_b = resolve_eval_run_id(store, run_a), resolve_eval_run_id(store, run_b)
    metrics_a, metrics_b = load_metrics(store, id_a), load_metrics(store, id_b)
    row_a, row_b = _row(store, id_a), _row(store, id_b)
    a, b = flatten_metrics(metrics_a), flatten_metrics(metrics_b)
    names = list(a) + [name for name in b if name not in a]
    deltas = [
        MetricDelta(metric=n, a=a.get(n), b=b.get(n),
                    delta=None if a.get(n) is None or b.get(n) is None else b[n] - a[n])  # type: ignore[operator]
        for n in names
    ]
    sa, sb = _settings(row_a), _settings(row_b)
    diff = [SettingDiff(key=k, a=sa.get(k), b=sb.get(k)) for k in sorted(set(sa) | set(sb))
            if k not in _QUIET_SETTINGS and sa.get(k) != sb.get(k)]
    return Comparison(a=_info(row_a, metrics_a), b=_info(row_b, metrics_b), settings_diff=diff, deltas=deltas)
