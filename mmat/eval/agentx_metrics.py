"""Agent-X's metrics: what the judge is shown, the per-item judgement, and the run aggregate.

Aggregation follows the benchmark: each judged metric is the mean over items whose judge reply gave a
readable score in [0, 1] (unreadable replies are dropped, not zeroed, and counted); G_acc is averaged over
the text-answer items only; G_a* = mean of (T_p, T_acc, T^s_acc), each averaged over the image-answer
("generative") items. A deterministic T^s_acc — the F1 of the set of GTA tool names the agent used against
the reference's set — is reported beside the judged one. A solve that failed outright scores 0 on every metric.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any, Protocol

from pydantic import BaseModel, Field

from mmat.eval.gta_tools import CODE_ONLY_GTA_TOOLS, gta_names_of
from mmat.eval.items import EvalItem
from mmat.eval.outcome import AgentOutcome

__all__ = [
    "JUDGED_METRICS", "AGENTX_COLUMNS", "Judgement", "Judge", "AgentXFigures", "MetricMean",
    "judge_view", "toolset_f1", "aggregate_agentx",
]

JUDGED_METRICS = ("G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "Ts_acc")
# the papers' column order (MATRIX Table / Agent-X leaderboard); Ts_acc_set is mmat's deterministic twin
AGENTX_COLUMNS = ("G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "G_a*", "Ts_acc")
_CLIP = 600


class Judgement(BaseModel):
    """One item's judge results: readable scores, and why each dropped metric was dropped."""

    scores: dict[str, float] = Field(default_factory=dict)
    justifications: dict[str, str] = Field(default_factory=dict)
    dropped: dict[str, str] = Field(default_factory=dict, description="metric -> why its reply was not used")


class Judge(Protocol):
    """``judge(item, outcome) -> Judgement`` (mmat.programs.agentx_judge.AgentXJudge is one)."""

    def __call__(self, item: EvalItem, outcome: AgentOutcome) -> Judgement: ...


class MetricMean(BaseModel):
    value: float | None
    n: int = Field(description="Items whose score entered the mean.")
    dropped: int = Field(0, description="Items whose judge reply could not be read (left out of the mean).")


class AgentXFigures(BaseModel):
    """The ten Agent-X columns plus the deterministic toolset F1, with counts."""

    judge: str | None
    metrics: dict[str, MetricMean]
    toolset_f1_set: MetricMean = Field(description="Deterministic T^s_acc: set F1 of GTA tool names, all items.")
    n_generative: int
    n_text: int
    g_a_star_reason: str | None = Field(None, description="Why G_a* is missing, when it is.")


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _CLIP else text[:_CLIP] + " …"


def judge_view(item: EvalItem, outcome: AgentOutcome) -> dict[str, str]:
    """The judge's inputs: the reference steps and answer, and the agent's steps rendered the same way."""
    gold = [s.tool for s in item.reference_steps if s.tool]
    reference = "\n".join(
        f"step {s.step}: task: {_clip(s.task)} | tool: {s.tool or '-'} | input: {_clip(s.input)} | "
        f"output: {_clip(s.output)} | thought: {_clip(s.thought)}"
        for s in item.reference_steps
    ) or "(the reference has no steps)"
    lines = []
    for n, step in enumerate(outcome.steps, start=1):
        names = gta_names_of([c.name for c in step.tool_calls], gold)
        tool = ", ".join(names) or ", ".join(c.name for c in step.tool_calls) or "python (no tool)"
        output = "; ".join(c.error or c.result or "" for c in step.tool_calls) or step.observation
        if step.unreadable:
            output = "(the model's reply could not be read)"
        lines.append(
            f"step {n}: task: {_clip(step.code) or '-'} | tool: {tool} | output: {_clip(output)} | "
            f"thought: {_clip(step.thought)}"
        )
    tools = item.tool_metadata or [{"name": c.name} for c in item.bench_calls]
    return {
        "query": item.question,
        "query_type": item.query_type or "subjective",
        "reference_steps": reference,
        "reference_answer": item.reference_answer or str(item.gt or ""),
        "agent_steps": "\n".join(lines) or "(the agent took no steps)",
        "agent_answer": outcome.answer or "(no answer)",
        "tool_descriptions": "\n".join(_clip(t) for t in tools) or "(no tool descriptions)",
    }


def toolset_f1(item: EvalItem, outcome: AgentOutcome | None) -> float:
    """F1 of the set of GTA tools used against the reference's set (code-only tools dropped from both)."""
    reference = {s.tool for s in item.reference_steps if s.tool} or {c.name for c in item.bench_calls}
    reference -= CODE_ONLY_GTA_TOOLS
    used = set(gta_names_of(outcome.tools_called, sorted(reference))) if outcome else set()
    if not reference and not used:
        return 1.0
    hits = len(used & reference)
    if not hits:
        return 0.0
    precision, recall = hits / len(used), hits / len(reference)
    return 2 * precision * recall / (precision + recall)


def _mean(rows: Sequence[dict[str, Any]], metric: str) -> MetricMean:
    values = [r["scores"][metric] for r in rows if metric in r["scores"]]
    dropped = sum(1 for r in rows if metric in r["dropped"])
    return MetricMean(value=fmean(values) if values else None, n=len(values), dropped=dropped)


def aggregate_agentx(details: Iterable[dict[str, Any]], judge: str | None) -> AgentXFigures:
    """The run's Agent-X figures from each greedy item's stored details (``ItemResult.details``)."""
    rows = [
        {"generative": bool(d.get("generative")), "scores": (d.get("judge") or {}).get("scores", {}),
         "dropped": (d.get("judge") or {}).get("dropped", {}), "set_f1": d.get("toolset_f1")}
        for d in details
    ]
    text = [r for r in rows if not r["generative"]]
    generative = [r for r in rows if r["generative"]]
    metrics: dict[str, MetricMean] = {}
    for metric in ("G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc"):
        metrics[metric] = _mean(rows, metric)
    metrics["G_acc"] = _mean(text, "G_acc")
    reason = None
    parts = [_mean(generative, m) for m in ("T_p", "T_acc", "Ts_acc")]
    if not generative:
        reason = "no image-answer items: pass --generative-ids FILE (Agent-X's list) or use dataset.json"
        metrics["G_a*"] = MetricMean(value=None, n=0)
    elif any(p.value is None for p in parts):
        reason = "a component of G_a* has no readable score on the image-answer items"
        metrics["G_a*"] = MetricMean(value=None, n=len(generative), dropped=max(p.dropped for p in parts))
    else:
        metrics["G_a*"] = MetricMean(value=fmean(p.value for p in parts), n=len(generative),
                                     dropped=max(p.dropped for p in parts))
    metrics["Ts_acc"] = _mean(rows, "Ts_acc")
    sets = [r["set_f1"] for r in rows if r["set_f1"] is not None]
    return AgentXFigures(
        judge=judge, metrics={k: metrics[k] for k in AGENTX_COLUMNS},
        toolset_f1_set=MetricMean(value=fmean(sets) if sets else None, n=len(sets)),
        n_generative=len(generative), n_text=len(text), g_a_star_reason=reason,
    )
