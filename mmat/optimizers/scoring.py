"""Score a program on a set of examples: the before/after figures of ``mmat optimize``.

This does what ``dspy.Evaluate`` does (call the program on each example's inputs, average the metric,
in parallel with DSPy's settings carried into every thread) with one difference that matters here:
an exception raised inside the program propagates. ``dspy.Evaluate`` logs it and scores the example
0, which would turn a bug in mmat into a quietly worse metric. The model's own failures never raise:
targets turn them into scored predictions.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Scored", "score_program"]


class Scored(BaseModel):
    """Mean score and the per-example scores and feedback, in example order."""

    model_config = ConfigDict(frozen=True)

    mean: float
    scores: list[float]
    feedback: list[str | None]


def score_program(program: Any, examples: Sequence[Any], metric: Callable[..., Any], *, threads: int = 1,
                  on_done: Callable[[], None] | None = None) -> Scored:
    """Run ``program(**example.inputs())`` and ``metric(example, prediction)`` on every example."""

    def one(example: Any) -> tuple[float, str | None]:
        outcome = metric(example, program(**example.inputs()))
        if on_done is not None:
            on_done()
        return float(outcome), getattr(outcome, "feedback", None)

    if not examples:
        raise ValueError("score_program needs at least one example")
    if threads <= 1:
        results = [one(e) for e in examples]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [pool.submit(contextvars.copy_context().run, one, e) for e in examples]
            results = [f.result() for f in futures]
    scores = [s for s, _ in results]
    return Scored(mean=sum(scores) / len(scores), scores=scores, feedback=[f for _, f in results])
