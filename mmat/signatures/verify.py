"""Verifiers: is a generated task (query + files) good data, and did an agent solve it correctly?

Both list their findings before deciding (``reasons`` comes first), so the decision is written after
the model has looked. Their typed verdicts (``QueryFileVerdict``, ``TrajectoryVerdict``) are what the
runner stores in the ``verdicts`` table.
"""

from __future__ import annotations

from typing import Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field

from mmat.signatures.images import Images

__all__ = [
    "QueryFileVerdict",
    "TrajectoryVerdict",
    "VerifyQueryFiles",
    "VerifyTrajectory",
    "MAX_REASONS",
]

MAX_REASONS = 5


class QueryFileVerdict(BaseModel):
    """The query-file verifier's decision on one generated task."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    reasons: list[str] = Field(default_factory=list, max_length=MAX_REASONS)
    rewritten_query: str | None = None


class TrajectoryVerdict(BaseModel):
    """The trajectory verifier's decision on one agent trajectory."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    verdict: Literal["correct", "incorrect"]
    reasons: list[str] = Field(default_factory=list, max_length=MAX_REASONS)
    score: float = Field(ge=0.0, le=1.0)


class VerifyQueryFiles(dspy.Signature):
    """Decide whether a generated task is good training data for an assistant that solves tasks with code and tools.

    A task is a user request plus the files attached to it. Check that:
    1. the files fit the request: every file the request talks about is attached, and its content (given as
       text, or shown as an image) really contains what the request needs;
    2. the request can be answered: it has one answer that can be checked, which follows from the files and
       the tools, without information the user did not give;
    3. the request is natural and concrete: worded as a user would ask, neither trivial nor a matter of opinion;
    4. the intended tools are what a good solution would use.
    Write your findings in `reasons`, then decide. Pass the task only if it has no serious problem. When the only
    problem is the wording (for example the request misdescribes a detail that the file shows differently),
    pass it and give the corrected request in `rewritten_query`; otherwise leave `rewritten_query` empty (null)."""

    query: str = dspy.InputField(desc="The user request.")
    intended_tools: list[str] = dspy.InputField(desc="The tools the task author expects a solution to use.")
    files: str = dspy.InputField(
        desc="Each attached file: its name, its kind and its content (documents as markdown, possibly cut off; "
        "images as a description when they are not shown)."
    )
    images: Images | None = dspy.InputField(desc="The attached images, when they can be shown.")
    reasons: list[str] = dspy.OutputField(desc=f"Short findings, one per item, at most {MAX_REASONS}.")
    passed: bool = dspy.OutputField(desc="true if the task is good training data, else false.")
    rewritten_query: str | None = dspy.OutputField(desc="A corrected request, or null when none is needed.")


class VerifyTrajectory(dspy.Signature):
    """Judge whether an assistant solved a task correctly with code and tools, so that only sound solutions are
    used to train other assistants.

    Check each step: the tool chosen suits what the step tries to do; its arguments are right (file names,
    values, the question asked); the assistant read the observations correctly and invented nothing; errors
    were noticed and fixed. Then check the final answer: it answers the request, agrees with the files and the
    observations, and matches the expected answer when one is given (treat that as strong evidence, not as
    infallible). Write your findings in `reasons`, then give the verdict: correct only if the final answer is
    right and the steps that lead to it are sound."""

    query: str = dspy.InputField(desc="The user request.")
    files: str = dspy.InputField(desc="The attached files: name, kind and content or description.")
    images: Images | None = dspy.InputField(desc="The attached images, when they can be shown.")
    steps: str = dspy.InputField(desc="Every step in order: thought, code, tool calls and observation.")
    answer: str = dspy.InputField(desc="The assistant's final answer.")
    expected_answer: str | None = dspy.InputField(desc="The answer the task author expected, when known.")
    reasons: list[str] = dspy.OutputField(desc=f"Short findings, one per item, at most {MAX_REASONS}.")
    verdict: Literal["correct", "incorrect"] = dspy.OutputField()
    score: float = dspy.OutputField(desc="Your confidence that the solution is correct and sound, from 0.0 to 1.0.")
