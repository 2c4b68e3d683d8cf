"""Step preferences (MATRIX Pref-X style): rank candidate next steps of an agent at the same state.

The sampler proposes several next steps from one state of a verified trajectory and runs each in a
forked sandbox; the judge sees the state and every candidate with its outcome and scores them. The
best and worst candidates become a preference pair.
"""

from __future__ import annotations

import dspy
from pydantic import BaseModel, ConfigDict, Field

from mmat.signatures.images import Images

__all__ = ["CandidateStep", "CandidateJudgement", "JudgeSteps", "MAX_CANDIDATES"]

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
