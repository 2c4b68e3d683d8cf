"""AgentXJudge: Agent-X's judge metrics as one DSPy module with one typed predictor per metric.

Each predictor (``agentx_judge.G_s`` ... ``agentx_judge.Ts_acc``, the names lm_calls files them under) answers
a justification and a score. A reply that cannot be read, a score outside [0, 1], or a call that failed after its retries (rate limit,
server error, timeout) is the judge's failure: recorded in the Judgement's ``dropped`` with the reason and
left out of that metric's mean — never a crash. A request the server refuses (wrong model, bad key) raises.
G_acc is not asked for image-answer items (the benchmark averages it over text answers only).
"""

from __future__ import annotations

import math
from typing import Any

import dspy
import dspy.utils.exceptions as dspy_errors
import litellm

from mmat.errors import ModelOutputError
from mmat.eval.agentx_metrics import Judgement, judge_view
from mmat.eval.items import EvalItem
from mmat.eval.outcome import AgentOutcome
from mmat.programs._calls import call_predictor, mark
from mmat.signatures.agentx import AGENTX_SIGNATURES

__all__ = ["AgentXJudge"]

# failures that retrying later could fix: the reply is missing, not wrong (DSPy's and litellm's classes)
_TRANSIENT = (
    dspy_errors.LMRateLimitError, dspy_errors.LMServerError, dspy_errors.LMTimeoutError, dspy_errors.LMTransportError,
    litellm.exceptions.RateLimitError, litellm.exceptions.APIConnectionError, litellm.exceptions.Timeout,
    litellm.exceptions.InternalServerError, litellm.exceptions.ServiceUnavailableError,
)


class AgentXJudge(dspy.Module):
    """``judge(item, outcome) -> Judgement`` over the nine judged Agent-X metrics."""

    _mmat_name = "agentx_judge"

    def __init__(self, metrics: tuple[str, ...] = tuple(AGENTX_SIGNATURES)):
        super().__init__()
        unknown = [m for m in metrics if m not in AGENTX_SIGNATURES]
        if unknown:
            raise ValueError(f"unknown Agent-X metrics {unknown}: choose from {', '.join(AGENTX_SIGNATURES)}")
        self.metrics = metrics
        self.predictors = {m: mark(dspy.Predict(AGENTX_SIGNATURES[m]), f"agentx_judge.{m}") for m in metrics}

    def forward(self, item: EvalItem, outcome: AgentOutcome) -> Judgement:
        view = judge_view(item, outcome)
        judgement = Judgement()
        for metric, predictor in self.predictors.items():
            if metric == "G_acc" and item.generative:
                continue
            inputs = {name: view[name] for name in predictor.signature.input_fields}
            try:
                pred = call_predictor(predictor, f"Agent-X judge {metric}", config={"temperature": 0.0}, **inputs)
            except ModelOutputError as e:
                judgement.dropped[metric] = f"unreadable reply: {e}"
                continue
            except _TRANSIENT as e:
                judgement.dropped[metric] = f"judge call failed: {type(e).__name__}: {str(e)[:200]}"
                continue
            score = _score(pred.score)
            if score is None:
                judgement.dropped[metric] = f"score {pred.score!r} is not a number in [0, 1]"
                continue
            judgement.scores[metric] = score
            judgement.justifications[metric] = str(pred.justification or "").strip()
        return judgement

    def __call__(self, item: EvalItem, outcome: AgentOutcome) -> Judgement:  # typed entry point, as dspy.Module's
        return super().__call__(item, outcome)


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        return None
    return score
