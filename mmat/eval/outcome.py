"""AgentOutcome: what a solver hands back to the eval runner for one (item, sample).

The runner does not know how an agent works; any callable ``solve(item, sample_idx) -> AgentOutcome``
can be evaluated (mmat's CodeAgent driven by a teacher or a tuned student, a scripted solver in tests).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

__all__ = ["AgentOutcome", "OutcomeCall", "OutcomeStep", "AgentStatus"]

# answered: final_answer() was called; fallback: the step budget ran out and a fallback answer was asked for;
# error_limit: too many consecutive errors (fallback answer too); crashed: the agent stopped on an error.
AgentStatus = Literal["answered", "fallback", "error_limit", "crashed"]


class OutcomeCall(BaseModel):
    """One tool call the agent made (mmat tool name)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: str | None = None
    error: str | None = None


class OutcomeStep(BaseModel):
    """One agent step as a judge reads it."""

    idx: int
    thought: str = ""
    code: str = ""
    observation: str = ""
    tool_calls: list[OutcomeCall] = Field(default_factory=list)
    error: str | None = None
    unreadable: bool = Field(False, description="The model's reply for this step could not be read (no code ran).")


class AgentOutcome(BaseModel):
    """The agent's final answer and what the scorers need."""

    answer: str = Field("", description="The final answer text (empty when the agent gave none).")
    tools_called: list[str] = Field(default_factory=list, description="mmat tool names called, in call order.")
    n_code_steps: int = Field(0, ge=0, description="Steps that ran code in the sandbox.")
    n_code_errors: int = Field(0, ge=0, description="Code steps that ended in an error.")
    n_steps: int = Field(0, ge=0, description="All agent steps, including ones that ran no code.")
    n_unreadable_steps: int = Field(0, ge=0, description="Steps whose model reply could not be read.")
    status: AgentStatus = Field("answered", description="How the agent stopped (see AgentStatus).")
    steps: list[OutcomeStep] = Field(default_factory=list, description="The steps, for judges (Agent-X).")
    traj_id: str | None = Field(None, description="The stored trajectory, when the solver recorded one.")
    error: str | None = Field(None, description="Why the agent stopped early (error limit, ...); the answer is still scored.")

    @model_validator(mode="after")
    def _counts_consistent(self) -> "AgentOutcome":
        if self.n_code_errors > self.n_code_steps:
            raise ValueError(f"n_code_errors ({self.n_code_errors}) exceeds n_code_steps ({self.n_code_steps})")
        if self.n_code_steps > self.n_steps:
            raise ValueError(f"n_code_steps ({self.n_code_steps}) exceeds n_steps ({self.n_steps})")
        return self

    @property
    def calls(self) -> list[OutcomeCall]:
        return [c for s in self.steps for c in s.tool_calls]
