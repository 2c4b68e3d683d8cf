"""What one sandboxed step returns: typed, JSON-able, ready to store (steps.tool_calls) and to show the model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["StepError", "ToolCall", "StepResult"]


class StepError(BaseModel):
    """An error in the model's code (or a limit it hit), phrased for the model to read next step."""

    type: str = Field(description="Exception class name, e.g. 'NameError', or 'TimeoutError' for a wall-time kill.")
    message: str = Field(description="The exception message.")
    traceback: str = Field("", description="Traceback trimmed to the model's own code (no sandbox frames).")


class ToolCall(BaseModel):
    """One tool call made by sandboxed code, recorded by the parent (shape of store TOOL_CALL_STRUCT)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments after mapping positional ones.")
    result: str = Field("", description="Text result (truncated to Limits.max_output_chars for the record).")
    duration_ms: float = 0.0
    error: str | None = Field(None, description="'ToolError: message' when the tool failed; the code saw the same message.")


class StepResult(BaseModel):
    """Outcome of Sandbox.run(code)."""

    stdout: str = Field("", description="Printed output (capped), child-process output and sandbox notes.")
    final_answer: Any = Field(None, description="Value passed to final_answer(), made JSON-safe (str() if needed).")
    has_final_answer: bool = False
    error: StepError | None = None
    new_files: list[str] = Field(default_factory=list, description="Workspace files created or modified by the step, relative paths, sorted.")
    tool_calls: list[ToolCall] = Field(default_factory=list)
    duration_ms: float = 0.0
    limit_hit: str | None = Field(None, description="Which limit stopped the step: one of limits.LIMIT_NAMES, or None.")
    restarted: bool = Field(False, description="The worker was restarted after this step: variables and imports are lost.")

    @property
    def ok(self) -> bool:
        """True when the step ran to the end without an error."""
        return self.error is None

    def observation(self) -> str:
        """The text an agent shows the model after this step (stdout, then the error if any)."""
        parts = [self.stdout.rstrip()] if self.stdout.strip() else []
        if self.error is not None:
            parts.append(self.error.traceback.rstrip() or f"{self.error.type}: {self.error.message}")
        if self.restarted:
            parts.append("[sandbox] The Python process was restarted: variables, imports and functions from earlier steps are gone.")
        return "\n".join(parts)
