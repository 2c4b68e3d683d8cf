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

from mmat.eval.agentx_metrics import AgentXFigures, aggregate_agentx
from mmat.eval.gta_tools import CATEGORIES, CategoryCounts, ToolCategoryScore, category_f1
from mmat.eval.items import AnswerKind, EvalItem
from mmat.eval.results import ERROR_KINDS, ItemResult

__all__ = ["Accuracy", "GroupMetrics", "EvalMetrics", "GtaFigures", "aggregate", "summary_line"]


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
    n_errors: int = Field(description="Items with any error kind (solve failed, error limit, fallback, unreadable steps).")
    errors_by_kind: dict[str, int] = Field(default_factory=dict, description="error kind -> items (see mmat.eval.results).")
    ans_acc: dict[str, Accuracy] = Field(default_factory=dict)
    tool_items: int = Field(0, description="Items with a non-empty reference tool set (the ToolAcc denominator).")
    tool_empty_gold: int = Field(0, description="Items whose reference tool set is empty: left out of ToolAcc.")
    tool_called_without_gold: int = Field(0, description="Of those, items where the agent called a tool anyway.")
    tool_precision: float | None = None
    tool_recall: float | None = None
    tool_exact: float | None = None
    code_items: int = Field(0, description="Items with at least one code step (the CodeExec denominator).")
    code_exec: float | None = None
    mean_steps: float | None = None


class GtaFigures(BaseModel):
    """GTA's end-to-end figures as its evaluator computes them (see mmat.eval.gta_tools, mmat.eval.ansacc)."""

    embedding_model: str | None = Field(None, description="The model that scored subjective answers (label says if not GTA's).")
    ans_acc_with_imggen: Accuracy | None = None
    imggen_reason: str | None = Field(None, description="Why AnsAcc w/ ImgGen is missing or partial.")
    tool_f1: dict[str, ToolCategoryScore] = Field(default_factory=dict, description="perception/operation/logic/creativity.")
    dropped_code_gold: int = Field(0, description="Gold Calculator/Solver/Plot calls left out of the L figure.")


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
    gta: GtaFigures | None = None
    agentx: AgentXFigures | None = None


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
    kinds = Counter(r.error_kind or ("solve_failed" if r.solve_failed else None) for r in results)
    empty = [r for r in results if r.details.get("empty_gold")]
    return GroupMetrics(
        n_items=len(results),
        n_errors=sum(n for kind, n in kinds.items() if kind),
        errors_by_kind={k: kinds[k] for k in ERROR_KINDS if kinds.get(k)},
        ans_acc=_ans_acc(r.ans_acc for r in results if r.counted),
        tool_items=len(tool_rows),
        tool_empty_gold=len(empty),
        tool_called_without_gold=sum(bool(r.details.get("called_without_gold")) for r in empty),
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


def _gta(greedy: Sequence[ItemResult], embedding_model: str | None) -> GtaFigures | None:
    rows = [r for r in greedy if "tool_categories" in r.details]
    if not rows:
        return None
    per_item = [{c: CategoryCounts(**r.details["tool_categories"].get(c, {})) for c in CATEGORIES} for r in rows]
    official = [r.ans_acc["gta_official"] for r in greedy if r.counted and "gta_official" in r.ans_acc]
    imggen_rows = [r for r in rows if "imggen" in r.details]
    scored = [r.details["imggen"] for r in imggen_rows if r.details["imggen"] is not None]
    reason = None
    with_imggen = None
    if not imggen_rows:
        reason = "no image-generation items"
    elif not scored:
        reason = f"none of the {len(imggen_rows)} image-generation items can be scored: " + (
            Counter(r.details.get("imggen_reason", "?") for r in imggen_rows).most_common(1)[0][0])
    else:
        if len(scored) < len(imggen_rows):
            reason = f"{len(imggen_rows) - len(scored)} of {len(imggen_rows)} image-generation items left out: " + (
                Counter(r.details.get("imggen_reason", "?") for r in imggen_rows if r.details["imggen"] is None).most_common(1)[0][0])
        with_imggen = Accuracy(correct=sum(official) + sum(scored), counted=len(official) + len(scored))
    return GtaFigures(
        embedding_model=embedding_model, ans_acc_with_imggen=with_imggen, imggen_reason=reason,
        tool_f1=category_f1(per_item), dropped_code_gold=sum(int(r.details.get("dropped_code_gold", 0)) for r in rows),
    )


def aggregate(
    bench: str, items: Sequence[EvalItem], results: Iterable[ItemResult], best_of_n: int, *,
    embedding_model: str | None = None, judge: str | None = None,
) -> EvalMetrics:
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
        gta=_gta(greedy, embedding_model),
    )
    judged = [r.details for r in greedy if "toolset_f1" in r.details]
    if judged:
        metrics.agentx = aggregate_agentx(judged, judge)
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
    if g.tool_empty_gold:
        line += f" ({g.tool_empty_gold} items with no reference tool left out)"
    if metrics.agentx is not None:
        ax = metrics.agentx.metrics
        line += f"; Agent-X G_acc {_num(ax['G_acc'].value)}, G_a* {_num(ax['G_a*'].value)}"
    line += f"; CodeExec {_pct(g.code_exec)}; {g.n_errors} errors"
    if g.errors_by_kind:
        line += " (" + ", ".join(f"{n} {kind}" for kind, n in g.errors_by_kind.items()) + ")"
    return line


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
