"""Rich tables for eval metrics and run comparisons, rendered to strings (the CLI prints them)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from mmat.eval.compare import Comparison, MetricDelta
from mmat.eval.metrics import Accuracy, EvalMetrics, GroupMetrics, summary_line
from mmat.eval.tables import PaperTable, paper_tables

__all__ = ["render_metrics", "render_compare", "render_paper_table"]

_WIDTH = 110
# Figures that are counts, not fractions: shown as plain numbers, never as percentages.
_COUNT_FIGURES = ("n_items", "counted", "n_errors", "mean_steps", "tool_empty_gold")
_SCORE_PREFIXES = ("agentx.",)  # 0-1 scores, shown as they are (the papers print .59, not 59%)


def _to_text(*renderables: object) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=_WIDTH, color_system=None, force_terminal=False, highlight=False)
    for renderable in renderables:
        console.print(renderable)
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _acc_cell(acc: Accuracy | None) -> str:
    if acc is None:
        return "–"
    return f"{_pct(acc.value)} ({acc.correct:g}/{acc.counted})"


def _add(table: Table, *cells: str) -> None:
    """Add a row with as many cells as the table has columns (no best-of-N column for greedy-only runs)."""
    table.add_row(*cells[: len(table.columns)])


def _group_rows(table: Table, group: GroupMetrics, best: dict[str, Accuracy] | None) -> None:
    for name, acc in group.ans_acc.items():
        _add(table, f"AnsAcc ({name})", _acc_cell(acc), _acc_cell((best or {}).get(name)) if best is not None else "")
    _add(table, "ToolAcc precision", _pct(group.tool_precision), "")
    _add(table, "ToolAcc recall", _pct(group.tool_recall), "")
    _add(table, "ToolAcc exact set", _pct(group.tool_exact), "")
    if group.tool_empty_gold:
        _add(table, "ToolAcc: items with no reference tool (left out)",
             f"{group.tool_empty_gold} ({group.tool_called_without_gold} called one)", "")
    _add(table, "CodeExec", _pct(group.code_exec), "")
    _add(table, "mean steps", "–" if group.mean_steps is None else f"{group.mean_steps:.2f}", "")
    _add(table, "errors", str(group.n_errors), "")
    for kind, n in group.errors_by_kind.items():
        _add(table, f"  errors: {kind}", str(n), "")


def _value(value: float | None, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.2f}"


def render_paper_table(paper: PaperTable) -> Table:
    """One paper-ordered table (GTA/GAIA in percent, Agent-X as 0-1 scores), its notes as the caption."""
    table = Table(title=paper.title, caption="; ".join(paper.notes) or None)
    for column in paper.columns:
        table.add_column(column, justify="right")
    table.add_row(*(_value(v, paper.percent) for v in paper.values))
    return table


def render_metrics(metrics: EvalMetrics, *, title: str | None = None) -> str:
    """The run's figures (percent) with greedy and best-of-N in separate columns, then one table per level."""
    best_header = f"best-of-{metrics.best_of_n}" if metrics.best_of_n > 1 else ""
    table = Table(title=title or f"{metrics.bench}: {metrics.n_items} items")
    table.add_column("metric")
    table.add_column("greedy", justify="right")
    if best_header:
        table.add_column(best_header, justify="right")
    _group_rows(table, metrics.greedy, metrics.best_of_n_ans_acc)
    tables: list[object] = [render_paper_table(p) for p in paper_tables(metrics)]
    tables.append(table)
    for level, group in metrics.by_level.items():
        level_table = Table(title=f"level {level}: {group.n_items} items")
        level_table.add_column("metric")
        level_table.add_column("greedy", justify="right")
        if best_header:
            level_table.add_column(best_header, justify="right")
        best = metrics.best_of_n_by_level.get(level) if metrics.best_of_n > 1 else None
        _group_rows(level_table, group, best)
        tables.append(level_table)
    return _to_text(*tables, summary_line(metrics))


def _fmt(metric: str, value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    if metric.startswith(_SCORE_PREFIXES):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    if metric.split(".")[-1] in _COUNT_FIGURES or ".errors." in metric:
        return f"{value:+g}" if signed else f"{value:g}"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def render_compare(comparison: Comparison | Sequence[MetricDelta], *, run_a: str = "a", run_b: str = "b") -> str:
    """Run A and run B (controllers, differing settings), then every figure for A, B and B - A
    (fractions shown as percent points)."""
    header: list[object] = []
    if isinstance(comparison, Comparison):
        deltas: Sequence[MetricDelta] = comparison.deltas
        run_a, run_b = comparison.a.eval_run_id, comparison.b.eval_run_id
        runs = Table(title="eval runs compared (eval_run_id)")
        for column in ("", "eval_run_id", "bench", "controller", "judge", "items", "created"):
            runs.add_column(column)
        for label, info in (("A", comparison.a), ("B", comparison.b)):
            runs.add_row(label, info.eval_run_id, info.bench or "", info.controller or "", info.judge or "",
                         str(info.n_items or ""), info.created_at or "")
        header.append(runs)
        if comparison.settings_diff:
            diff = Table(title="settings that differ")
            for column in ("setting", "A", "B"):
                diff.add_column(column)
            for d in comparison.settings_diff:
                diff.add_row(d.key, _setting(d.a), _setting(d.b))
            header.append(diff)
        else:
            header.append("settings: identical")
    else:
        deltas = comparison
    table = Table(title=f"A = {run_a} vs B = {run_b} (delta = B - A)")
    table.add_column("metric")
    table.add_column(f"A {run_a}", justify="right")
    table.add_column(f"B {run_b}", justify="right")
    table.add_column("delta", justify="right")
    for d in deltas:
        table.add_row(d.metric, _fmt(d.metric, d.a), _fmt(d.metric, d.b), _fmt(d.metric, d.delta, signed=True))
    return _to_text(*header, table)


def _setting(value: object) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, default=str)
