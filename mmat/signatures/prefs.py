"""Step preferences (MATRIX Pref-X style): rank candidate next steps of an agent at the same state.

The sampler proposes several next steps from one state of a task and runs each in a forked sandbox;
the judge sees the state and every candidate with its outcome and scores them. The best candidate is
the chosen side of the state's preference pairs, and the trajectory goes on with it.

A free-text judge answers a list of judgements naming their candidates; a schema-constrained judge
(local models, with the JSON adapter) gets ``judgements_model(n)`` instead: one required field per
candidate, so its decoding cannot skip one.
"""

from __future__ import annotations

from functools import lru_cache

import dspy
from pydantic import BaseModel, ConfigDict, Field, create_model

from mmat.signatures.images import Images

__all__ = ["CandidateStep", "CandidateJudgement", "StepScore", "JudgeSteps", "judgements_model", "MAX_CANDIDATES"]

MAX_CANDIDATES = 8


class CandidateStep(BaseModel):
    """One proposed next step and what happened when it ran."""

    model_config = ConfigDict(extra="forbid")

    thought: str
    code: str
    observation: str = Field(description="What the code printed, returned or raised when it ran.")
    error: str | None = Field(default=None, description="The error the code raised, if any.")


class CandidateJudgement(BaseModel):
    """The judge's score for one candidate."""

    model_config = ConfigDict(extra="forbid")

    candidate: int = Field(ge=0, lt=MAX_CANDIDATES, description="The candidate's index in the candidates list.")
    score: float = Field(ge=0.0, le=1.0, description="How good this step is as the next step, from 0.0 to 1.0.")
    reason: str = Field(max_length=300, description="Why, in one sentence.")


class StepScore(BaseModel):
    """The judge's score for one candidate (its index is the field's name)."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0.0, le=1.0, description="How good this step is as the next step, from 0.0 to 1.0.")
    reason: str = Field(max_length=300, description="Why, in one sentence.")


@lru_cache(maxsize=MAX_CANDIDATES)
def judgements_model(n: int) -> type[BaseModel]:
    """Judgements of exactly ``n`` candidates: fields ``candidate_0`` ... ``candidate_{n-1}``, all required."""
    if not 1 <= n <= MAX_CANDIDATES:
        raise ValueError(f"between 1 and {MAX_CANDIDATES} candidates can be judged, got {n}")
    fields = {f"candidate_{i}": (StepScore, Field(description=f"Your judgement of candidate {i}.")) for i in range(n)}
    return create_model(f"Judgements{n}", __config__=ConfigDict(extra="forbid"), **fields)


class JudgeSteps(dspy.Signature):
    """Score candidate next steps of an assistant that solves a task with code and tools.

    All candidates start from the same point: the task and the steps taken so far. Each candidate was run, and
    you see what it printed or raised. A good step moves the task forward: it calls a suitable tool with the
    right arguments, uses earlier results correctly, checks what it needs, and runs without errors; a final
    answer is good only if the evidence so far supports it. A step that fails, repeats earlier work, guesses,
    or answers without evidence is worse. Give every candidate a score; use the whole range from 0.0 to 1.0 so
    that better steps get clearly higher scores."""

    task: str = dspy.InputField(desc="The user's task.")
    files: str = dspy.InputField(desc="The files attached to the task.")
    images: Images | None = dspy.InputField(desc="The task's images, when they can be shown.")
    steps_so_far: str = dspy.InputField(desc="The steps already taken: thought, code and observation of each.")
    candidates: list[CandidateStep] = dspy.InputField(desc="The candidate next steps, numbered from 0 in list order.")
    judgements: list[CandidateJudgement] = dspy.OutputField(desc="One judgement per candidate, in the candidates' order.")
