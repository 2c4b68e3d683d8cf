"""Aggregate scored samples into run metrics: greedy and best-of-N kept apart, and per difficulty level.

Greedy figures use sample 0 of every item. Best-of-N AnsAcc counts an item right when any of its samples
is right (each scorer separately); it is reported next to greedy, never mixed into it. Fractions are kept
in [0, 1]; renderers show percentages.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from statistics import fmean

from pydantic import BaseModel, Field, computed_field

from mmat.eval.items import AnswerKind, EvalItem
from mmat.eval.results import ItemResult

__all__ = ["Accuracy", "GroupMetrics", "EvalMetrics", "aggregate", "summary_line"]


class Accuracy(BaseModel):
    """Right answers over counted items for one scorer."""

    correct: float
    counted: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def value(self) -> float | None:
        return self.correct / self.counted if self.counted else None


class GroupMetrics(BaseModel):
    """Figures over a group of items (a whole run or one level), from one sample per item."""

    n_items: int
    n_errors: int = Field(description="Items whose solve raised a model or sandbox error (scored 0).")
    ans_acc: dict[str, Accuracy] = Field(default_factory=dict)
    tool_items: int = Field(0, description="Items with reference tool calls (the ToolAcc denominator).")
    tool_precision: float | None = None
    tool_recall: float | None = None
    tool_exact: float | None = None
    code_items: int = Field(0, description="Items with at least one code step (the CodeExec denominator).")
    code_exec: float | None = None
    mean_steps: float | None = None


class EvalMetrics(BaseModel):
    """Everything one eval run measured; stored as eval_runs.metrics."""

    bench: str
    n_items: int
    best_of_n: int
    counted: int = Field(description="Items AnsAcc counts.")
    not_counted: dict[str, int] = Field(default_factory=dict, description="answer kind -> items AnsAcc does not count.")
    greedy: GroupMetrics
    best_of_n_ans_acc: dict[str, Accuracy] | None = Field(None, description="Any-sample-right AnsAcc; None when best_of_n is 1.")
    by_level: dict[str, GroupMetrics] = Field(default_factory=dict)
    best_of_n_by_level: dict[str, dict[str, Accuracy]] = Field(default_factory=dict)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def _ans_acc(per_item: Iterable[dict[str, float]]) -> dict[str, Accuracy]:
    correct: dict[str, float] = defaultdict(float)
    counted: Counter[str] = Counter()
    for scores in per_item:
        for scorer, value in scores.items():
            correct[scorer] += value
            counted[scorer] += 1
    return {s: Accuracy(correct=correct[s], counted=counted[s]) for s in sorted(counted)}


def _group(results: Sequence[ItemResult]) -> GroupMetrics:
    tool_rows = [r for r in results if r.tool_exact is not None]
    code_rows = [r.code_exec for r in results if r.code_exec is not None]
    return GroupMetrics(
        n_items=len(results),
        n_errors=sum(r.solve_failed for r in results),
        ans_acc=_ans_acc(r.ans_acc for r in results if r.counted),
        tool_items=len(tool_rows),
        tool_precision=_mean(r.tool_precision for r in tool_rows),
        tool_recall=_mean(r.tool_recall for r in tool_rows),
        tool_exact=_mean(float(bool(r.tool_exact)) for r in tool_rows),
        code_items=len(code_rows),
        code_exec=_mean(code_rows),
        mean_steps=_mean(float(r.n_steps) for r in results if r.n_steps is not None and not r.solve_failed),
    )


def _best_of_n(samples_by_item: dict[str, list[ItemResult]]) -> dict[str, Accuracy]:
    best: list[dict[str, float]] = []
    for samples in samples_by_item.values():
        counted = [s for s in samples if s.counted]
        if not counted:
            continue
        scorers = {name for s in counted for name in s.ans_acc}
        best.append({name: max(s.ans_acc.get(name, 0.0) for s in counted) for name in scorers})
    return _ans_acc(best)


def aggregate(bench: str, items: Sequence[EvalItem], results: Iterable[ItemResult], best_of_n: int) -> EvalMetrics:
    """Run metrics from every scored sample. Items with no greedy sample are a bug in the caller."""
    by_item: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_item[r.item_key].append(r)
    missing = [item.key for item in items if not any(r.sample_idx == 0 for r in by_item.get(item.key, []))]
    if missing:
        raise ValueError(f"no greedy sample for items {missing[:5]}")
    greedy = [next(r for r in by_item[item.key] if r.sample_idx == 0) for item in items]
    kinds: Counter[AnswerKind] = Counter(r.answer_kind for r in greedy if not r.counted)
    levels = sorted({item.level for item in items if item.level is not None})
    metrics = EvalMetrics(
        bench=bench,
        n_items=len(items),
        best_of_n=best_of_n,
        counted=sum(r.counted for r in greedy),
        not_counted=dict(sorted(kinds.items())),
        greedy=_group(greedy),
        by_level={lv: _group([r for r in greedy if r.level == lv]) for lv in levels},
    )
    if best_of_n > 1:
        metrics.best_of_n_ans_acc = _best_of_n(by_item)
        metrics.best_of_n_by_level = {
            lv: _best_of_n({k: v for k, v in by_item.items() if v[0].level == lv}) for lv in levels
        }
    return metrics


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_line(metrics: EvalMetrics) -> str:
    """One line for the end of a run: AnsAcc per scorer, what was counted, ToolAcc, CodeExec, errors."""
    g = metrics.greedy
    acc = ", ".join(f"{name} {_pct(a.value)}" for name, a in g.ans_acc.items()) or "n/a"
    not_counted = ", ".join(f"{n} {kind}" for kind, n in metrics.not_counted.items())
    line = f"{metrics.bench}: {metrics.n_items} items; greedy AnsAcc {acc} on {metrics.counted} counted items"
    if not_counted:
        line += f" (not counted: {not_counted})"
    if metrics.best_of_n_ans_acc is not None:
        best = ", ".join(f"{name} {_pct(a.value)}" for name, a in metrics.best_of_n_ans_acc.items())
        line += f"; best-of-{metrics.best_of_n} AnsAcc {best}"
    if g.tool_items:
        line += f"; ToolAcc exact {_pct(g.tool_exact)} (P {_pct(g.tool_precision)}, R {_pct(g.tool_recall)})"
    line += f"; CodeExec {_pct(g.code_exec)}; {g.n_errors} errors"
    return line
