"""What a CodeAgent run produces (``AgentStep``, ``Trajectory``) and the text views of it.

Observations are rendered here, once: the agent feeds them back to the model, the runner stores them
(``steps.observation``), and the conversation rebuilt for finetuning reads them back verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmat.sandbox.results import StepResult, ToolCall

__all__ = ["AgentStep", "Trajectory", "render_observation", "render_steps", "answer_text", "MAX_OBSERVATION_CHARS"]

MAX_OBSERVATION_CHARS = 6000  # what one observation may add to the controller's context
MAX_TOOL_RESULT_CHARS = 2000  # per tool call shown in an observation (the code can print more)
MAX_ARG_CHARS = 200

TrajectoryStatus = Literal["answered", "fallback", "error_limit"]


class AgentStep(BaseModel):
    """One step: what the model wrote and what running it gave."""

    model_config = ConfigDict(extra="forbid")

    idx: int
    thought: str = ""
    code: str = Field("", description="The code exactly as the model wrote it (fences stripped only to run it).")
    observation: str = ""
    tool_calls: list[ToolCall] = []
    error: str | None = Field(None, description="'Type: message' when the step failed (bad code, a limit, an unreadable reply).")
    images: list[str] = Field([], description="Image files this step produced, in order (workspace paths, later blob paths).")
    duration_ms: float = 0.0
    final_answer: str | None = Field(None, description="The value passed to final_answer(), when this step called it.")


class Trajectory(BaseModel):
    """A whole agent run. ``status``: answered (final_answer called), fallback (steps ran out; the
    answer comes from FallbackAnswer), error_limit (too many consecutive errors; fallback answer too)."""

    model_config = ConfigDict(extra="forbid")

    steps: list[AgentStep]
    answer: str | None
    status: TrajectoryStatus
    n_errors: int
    tools: list[str] = []
    multimodal: bool = False


def answer_text(value: Any) -> str:
    """A final answer as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False, default=str)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit:,} more characters]"


def _call_line(call: ToolCall) -> str:
    args = ", ".join(f"{k}={_clip(repr(v), MAX_ARG_CHARS)}" for k, v in call.arguments.items())
    if call.error:
        return f"{call.name}({args}) failed: {call.error}"
    return f"{call.name}({args}) returned:\n{_clip(call.result, MAX_TOOL_RESULT_CHARS)}"


def render_observation(result: StepResult, new_files: Sequence[str] = ()) -> str:
    """The observation text for one sandboxed step: output, tool calls, error, new files, final answer."""
    parts = []
    if result.stdout.strip():
        parts.append("Output:\n" + result.stdout.strip())
    if result.tool_calls:
        parts.append("Tool calls:\n" + "\n".join(_call_line(c) for c in result.tool_calls))
    if result.error is not None:
        detail = result.error.traceback.strip() or f"{result.error.type}: {result.error.message}"
        parts.append("Error:\n" + detail)
    if result.restarted:
        parts.append("Note: the Python session was restarted; variables and imports from earlier steps are gone.")
    if new_files:
        parts.append("New files: " + ", ".join(new_files))
    if result.has_final_answer:
        parts.append("Final answer given: " + answer_text(result.final_answer))
    text = "\n\n".join(parts) or "The code ran and printed nothing."
    return _clip(text, MAX_OBSERVATION_CHARS)


def render_steps(steps: Sequence[AgentStep]) -> str:
    """Steps as plain text for the fallback answer, the trajectory verifier and the step judge."""
    if not steps:
        return "(no steps)"
    blocks = []
    for s in steps:
        blocks.append(
            f"Step {s.idx + 1}\nThought: {s.thought or '(none)'}\nCode:\n```python\n{s.code.strip()}\n```\n"
            f"Observation:\n{s.observation or '(none)'}"
        )
    return "\n\n".join(blocks)
