"""ItemResult: one scored (item, sample) — the in-memory twin of an ``eval_items`` row.

Scoring happens once, when a sample finishes; the row keeps the scores so a resumed run (or
``compare_runs``) aggregates from the store without re-scoring or re-running the agent. Benchmark-specific
figures (GTA's per-category tool counts and image-generation credit, Agent-X's judge scores, media notes)
live in ``details``.

Error kinds (``error_kind``), the first that applies: ``solve_failed`` (the solve raised a model or sandbox
error: no answer, every score 0, redone on resume), ``error_limit`` (too many consecutive step errors),
``fallback`` (the step budget ran out; the answer came from the fallback prompt), ``unreadable`` (at least one
step's model reply could not be read). Items of the last three kinds keep their scored answer and count as
errors too.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from mmat.eval.agentx_metrics import JUDGED_METRICS, Judgement, toolset_f1
from mmat.eval.ansacc import score_answer
from mmat.eval.codeexec import code_exec
from mmat.eval.gta_tools import category_counts, gta_names_of
from mmat.eval.items import AnswerKind, EvalItem
from mmat.eval.outcome import AgentOutcome
from mmat.eval.toolacc import tool_acc, tool_sets

__all__ = ["ItemResult", "Scoring", "score_outcome", "score_failure", "SOLVE_FAILED", "ERROR_KINDS", "answer_text"]

# Prefix of eval_items.error for a solve that raised (ModelOutputError/SandboxError): resume redoes these.
SOLVE_FAILED = "solve failed: "
ERROR_KINDS = ("solve_failed", "error_limit", "fallback", "unreadable")
_ANSWER_KEYS = ("answer", "final_answer", "value", "text", "result")
_CREATIVE_GTA = ("TextToImage", "ImageStylization")
_CREATIVE_MMAT = ("image_generator", "image_edit")


class Scoring(BaseModel):
    """What scoring needs beyond the item and the outcome: an embedding similarity and a judge."""

    model_config = {"arbitrary_types_allowed": True}

    similarity: Callable[[str, list[str]], float] | None = None
    judge: Callable[[EvalItem, AgentOutcome], Judgement] | None = None


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
    task_id: str | None = None
    error: str | None = None
    error_kind: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def solve_failed(self) -> bool:
        return bool(self.error and self.error.startswith(SOLVE_FAILED))

    def to_row(self) -> dict[str, Any]:
        """The ``eval_items`` row; JSON columns (gt, ans_acc, details) as values, which the writer encodes."""
        return self.model_dump(exclude={"answer_kind"})

    @classmethod
    def from_row(cls, row: dict[str, Any], item: EvalItem) -> "ItemResult":
        """Rebuild from a stored row (JSON columns read back as JSON text); the item supplies its answer kind."""
        data = {k: v for k, v in row.items() if k in cls.model_fields}
        for column in ("gt", "ans_acc", "details"):
            if isinstance(data.get(column), str):
                data[column] = json.loads(data[column])
        data["ans_acc"] = data.get("ans_acc") or {}
        data["details"] = data.get("details") or {}
        return cls(answer_kind=item.answer_kind, **data)


def answer_text(raw: str | None) -> str:
    """The final answer as text: a dict (or its JSON/Python rendering) holding one answer field is unwrapped."""
    if raw is None:
        return ""
    text = raw.strip()
    if text.startswith("{") and text.endswith("}"):
        value: Any = None
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
        if isinstance(value, dict):
            for key in _ANSWER_KEYS:
                if key in value and isinstance(value[key], (str, int, float)) and not isinstance(value[key], bool):
                    return str(value[key]).strip()
    return text


def _base(eval_run_id: str, item: EvalItem, sample_idx: int, task_id: str | None) -> dict[str, Any]:
    return {
        "eval_run_id": eval_run_id,
        "item_key": item.key,
        "sample_idx": sample_idx,
        "answer_kind": item.answer_kind,
        "level": item.level,
        "question": item.question,
        "gt": item.gt,
        "task_id": task_id,
    }


def _error_kind(outcome: AgentOutcome) -> str | None:
    if outcome.status == "error_limit":
        return "error_limit"
    if outcome.status in ("fallback", "crashed"):
        return "fallback"
    if outcome.n_unreadable_steps:
        return "unreadable"
    return None


def _imggen(item: EvalItem, outcome: AgentOutcome | None, similarity: Any) -> tuple[float | None, str | None]:
    """GTA's image-generation credit: similarity of the agent's creative-tool prompts to the reference's arguments."""
    gold = [c for c in item.bench_calls if c.name in _CREATIVE_GTA]
    gold_text = " ".join(str(v) for c in gold for v in c.arguments.values() if isinstance(v, str) and not _is_path(v))
    if not gold_text.strip():
        return None, "the reference has no creative-tool call with text arguments"
    if similarity is None:
        return None, "no embedding model"
    if outcome is None:
        return 0.0, None
    prompts = [str(v) for c in outcome.calls if c.name in _CREATIVE_MMAT for k, v in c.arguments.items()
               if isinstance(v, str) and k != "image_path" and not _is_path(v)]
    if not prompts:
        return 0.0, None
    return float(similarity(" ".join(prompts), [gold_text])), None


def _is_path(value: str) -> bool:
    return "/" in value and " " not in value or value.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".gif"))


def _gta_details(item: EvalItem, outcome: AgentOutcome | None, similarity: Any) -> dict[str, Any]:
    if not item.bench_calls and item.answer_kind not in ("whitelist", "subjective", "none"):
        return {}
    gold = [c.name for c in item.bench_calls]
    called = outcome.tools_called if outcome else []
    counts, dropped = category_counts(called, gold)
    details: dict[str, Any] = {
        "tool_categories": {c: v.model_dump() for c, v in counts.items()},
        "dropped_code_gold": dropped,
        "called_gta": gta_names_of(called, gold),
    }
    if item.answer_kind == "none" and item.tool_gold_known:
        score, reason = _imggen(item, outcome, similarity)
        details["imggen"] = score
        if reason:
            details["imggen_reason"] = reason
    return details


def _agentx_details(item: EvalItem, outcome: AgentOutcome | None, judgement: Judgement | None) -> dict[str, Any]:
    """Agent-X's figures: for items judged (a judge in the scoring) or only a judge can score (data.json)."""
    if judgement is None and item.answer_kind != "judged":
        return {}
    details: dict[str, Any] = {"generative": item.generative, "query_type": item.query_type,
                               "toolset_f1": toolset_f1(item, outcome)}
    if judgement is not None:
        details["judge"] = judgement.model_dump()
    return details


def score_outcome(
    eval_run_id: str, item: EvalItem, sample_idx: int, outcome: AgentOutcome, *,
    scoring: Scoring | None = None, task_id: str | None = None,
) -> ItemResult:
    """Score an agent's outcome with every applicable rule (and the judge, when the scoring has one)."""
    scoring = scoring or Scoring()
    answer_value = answer_text(outcome.answer)
    answer = score_answer(item, answer_value, similarity=scoring.similarity)
    called, gold = tool_sets(outcome.tools_called, item.gold_tool_calls)
    tools = tool_acc(outcome.tools_called, item.gold_tool_calls) if item.tool_gold_known and gold else None
    details: dict[str, Any] = {}
    if item.tool_gold_known:
        details["empty_gold"] = not gold
        if not gold:
            details["called_without_gold"] = bool(called)
    details.update(_gta_details(item, outcome, scoring.similarity))
    judgement = scoring.judge(item, outcome.model_copy(update={"answer": answer_value})) if scoring.judge else None
    details.update(_agentx_details(item, outcome, judgement))
    if item.media_notes:
        details["media"] = list(item.media_notes)
    return ItemResult(
        **_base(eval_run_id, item, sample_idx, task_id),
        answer=answer_value,
        counted=answer.counted,
        ans_acc=answer.scores,
        tool_precision=tools.precision if tools else None,
        tool_recall=tools.recall if tools else None,
        tool_exact=tools.exact if tools else None,
        code_exec=code_exec(outcome.n_code_steps, outcome.n_code_errors),
        n_steps=outcome.n_steps,
        traj_id=outcome.traj_id,
        error=outcome.error,
        error_kind=_error_kind(outcome),
        details=details,
    )


def score_failure(
    eval_run_id: str, item: EvalItem, sample_idx: int, error: BaseException, *,
    scoring: Scoring | None = None, task_id: str | None = None,
) -> ItemResult:
    """A solve that raised a model or sandbox error: recorded with the error, every applicable score 0."""
    scoring = scoring or Scoring()
    answer = score_answer(item, None, similarity=scoring.similarity)
    _, gold = tool_sets([], item.gold_tool_calls)
    has_tools = item.tool_gold_known and bool(gold)
    details: dict[str, Any] = {"empty_gold": not gold} if item.tool_gold_known else {}
    details.update(_gta_details(item, None, scoring.similarity))
    zero = Judgement(scores={m: 0.0 for m in JUDGED_METRICS if not (m == "G_acc" and item.generative)})
    details.update(_agentx_details(item, None, zero if scoring.judge else None))
    return ItemResult(
        **_base(eval_run_id, item, sample_idx, task_id),
        answer=None,
        counted=answer.counted,
        ans_acc={name: 0.0 for name in answer.scores},
        tool_precision=0.0 if has_tools else None,
        tool_recall=0.0 if has_tools else None,
        tool_exact=False if has_tools else None,
        code_exec=None,
        n_steps=None,
        error=f"{SOLVE_FAILED}{type(error).__name__}: {error}",
        error_kind="solve_failed",
        details=details,
    )
