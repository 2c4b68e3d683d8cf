"""ItemResult: one scored (item, sample) — the in-memory twin of an ``eval_items`` row.

Scoring happens once, when a sample finishes; the row keeps the scores so a resumed run (or
``compare_runs``) aggregates from the store without re-scoring or re-running the agent.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from mmat.eval.ansacc import score_answer
from mmat.eval.codeexec import code_exec
from mmat.eval.items import AnswerKind, EvalItem
from mmat.eval.outcome import AgentOutcome
from mmat.eval.toolacc import tool_acc

__all__ = ["ItemResult", "score_outcome", "score_failure", "SOLVE_FAILED"]

# Prefix of eval_items.error for a solve that raised (ModelOutputError/SandboxError): resume redoes these.
SOLVE_FAILED = "solve failed: "


class ItemResult(BaseModel):
    """The scores of one sample of one item (sample_idx 0 is the greedy run)."""

    eval_run_id: str
    item_key: str
    sample_idx: int = Field(ge=0)
    answer_kind: AnswerKind
    level: str | None = None
    question: str
    answer: str | None = None
    gt: Any = None
    counted: bool
    ans_acc: dict[str, float] = Field(default_factory=dict)
    tool_precision: float | None = None
    tool_recall: float | None = None
    tool_exact: bool | None = None
    code_exec: float | None = None
    n_steps: int | None = None
    traj_id: str | None = None
    error: str | None = None

    @property
    def solve_failed(self) -> bool:
        return bool(self.error and self.error.startswith(SOLVE_FAILED))

    def to_row(self) -> dict[str, Any]:
        """The ``eval_items`` row; JSON columns (gt, ans_acc) as values, which the store's writer encodes."""
        return self.model_dump(exclude={"answer_kind"})

    @classmethod
    def from_row(cls, row: dict[str, Any], item: EvalItem) -> "ItemResult":
        """Rebuild from a stored row (JSON columns read back as JSON text); the item supplies its answer kind."""
        data = dict(row)
        for column in ("gt", "ans_acc"):
            if isinstance(data.get(column), str):
                data[column] = json.loads(data[column])
        data["ans_acc"] = data.get("ans_acc") or {}
        return cls(answer_kind=item.answer_kind, **data)


def _base(eval_run_id: str, item: EvalItem, sample_idx: int) -> dict[str, Any]:
    return {
        "eval_run_id": eval_run_id,
        "item_key": item.key,
        "sample_idx": sample_idx,
        "answer_kind": item.answer_kind,
        "level": item.level,
        "question": item.question,
        "gt": item.gt,
    }


def score_outcome(eval_run_id: str, item: EvalItem, sample_idx: int, outcome: AgentOutcome) -> ItemResult:
    """Score an agent's outcome with every applicable rule."""
    answer = score_answer(item, outcome.answer)
    tools = tool_acc(outcome.tools_called, item.gold_tool_calls) if item.tool_gold_known else None
    return ItemResult(
        **_base(eval_run_id, item, sample_idx),
        answer=outcome.answer,
        counted=answer.counted,
        ans_acc=answer.scores,
        tool_precision=tools.precision if tools else None,
        tool_recall=tools.recall if tools else None,
        tool_exact=tools.exact if tools else None,
        code_exec=code_exec(outcome.n_code_steps, outcome.n_code_errors),
        n_steps=outcome.n_steps,
        traj_id=outcome.traj_id,
        error=outcome.error,
    )


def score_failure(eval_run_id: str, item: EvalItem, sample_idx: int, error: BaseException) -> ItemResult:
    """A solve that raised a model or sandbox error: recorded with the error, every applicable score 0."""
    answer = score_answer(item, None)
    return ItemResult(
        **_base(eval_run_id, item, sample_idx),
        answer=None,
        counted=answer.counted,
        ans_acc={name: 0.0 for name in answer.scores},
        tool_precision=0.0 if item.tool_gold_known else None,
        tool_recall=0.0 if item.tool_gold_known else None,
        tool_exact=False if item.tool_gold_known else None,
        code_exec=None,
        n_steps=None,
        error=f"{SOLVE_FAILED}{type(error).__name__}: {error}",
    )
