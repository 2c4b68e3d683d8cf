"""The parent's side of the worker protocol: the ToolHost protocol and the messages a worker may send.

The channel is JSON lines over two pipes (fd 3 into the worker, fd 4 out of it). Sandboxed code can
write to fd 4 too, so every line is validated here: anything that is not exactly one of the
messages below is a protocol violation, which fails the step and restarts the worker.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = ["ToolHost", "ProtocolViolation", "parse_worker_message", "WorkerMessage", "ReadyMsg", "ToolMsg", "DoneMsg", "MAX_LINE_BYTES",
           "MAX_TOOL_ARGS_BYTES", "MAX_TOOL_ARGS_DEPTH"]

# Longest line the parent accepts from a worker: a capped stdout plus a large final answer fit easily.
MAX_LINE_BYTES = 8 * 1024 * 1024
# Tool arguments are names, questions, boxes: refuse (as a ToolError) anything larger or deeper.
MAX_TOOL_ARGS_BYTES = 256 * 1024
MAX_TOOL_ARGS_DEPTH = 16


@runtime_checkable
class ToolHost(Protocol):
    """What the sandbox needs from a tool host (mmat.tools.WorkspaceToolHost implements it).

    ``call`` raises an exception whose class (or a base class) is named ``ToolError`` or
    ``ToolArgumentError`` -- or an ``mmat.errors.ModelOutputError`` -- for failures the model should
    read: sandboxed code gets them as ``ToolError(message)``. Any other exception is a bug or a
    setting for a person: the step's worker is restarted and the exception propagates out of
    ``Sandbox.run``.

    Optional extras, used when present:
      * ``signature(name) -> list[str]``: parameter names, so sandboxed code may call tools positionally.
      * ``for_workspace(path) -> ToolHost``: the same tools bound to another workspace; ``Sandbox.fork``
        uses it so a fork's tool calls read and write the fork's files.
    """

    def names(self) -> list[str]: ...

    def call(self, name: str, kwargs: dict[str, Any]) -> str: ...


class ProtocolViolation(Exception):
    """A worker wrote something that is not a valid message. Internal: becomes a failed step + restart."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadyMsg(_Msg):
    op: Literal["ready"]
    python: str


class ToolMsg(_Msg):
    op: Literal["tool"]
    name: str = Field(max_length=200)
    kwargs: dict[str, Any]


class ErrorInfo(_Msg):
    type: str = Field(max_length=500)
    message: str
    traceback: str = ""


class DoneMsg(_Msg):
    op: Literal["done"]
    step: int
    stdout: str
    stdout_dropped: int = Field(ge=0)
    child_output: str
    child_output_dropped: int = Field(ge=0)
    error: ErrorInfo | None
    has_final_answer: bool
    final_answer: Any
    limit: Literal["memory", "file_size"] | None
    duration_ms: float
    # what of the worker's own code a step changed (see _worker.py's integrity check); None if nothing
    tampered: str | None = Field(None, max_length=2000)


WorkerMessage = Annotated[ReadyMsg | ToolMsg | DoneMsg, Field(discriminator="op")]
_ADAPTER: TypeAdapter[ReadyMsg | ToolMsg | DoneMsg] = TypeAdapter(WorkerMessage)


def parse_worker_message(line: bytes) -> ReadyMsg | ToolMsg | DoneMsg:
    """One line from the worker -> a validated message, or ProtocolViolation naming what was wrong."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolViolation(f"not JSON ({e.__class__.__name__}): {line[:80]!r}") from None
    except RecursionError:  # '[[[[...' written straight onto the channel
        raise ProtocolViolation("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolViolation(f"not a JSON object: {line[:80]!r}")
    try:
        return _ADAPTER.validate_python(data)
    except RecursionError:
        raise ProtocolViolation("a message nested too deeply") from None
    except ValidationError as e:
        raise ProtocolViolation(f"invalid message: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}") from None
