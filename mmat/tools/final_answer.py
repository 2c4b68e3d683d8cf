"""``final_answer``: listed for the agent like any tool, but defined natively inside the sandbox.

The agent ends its run by calling it; the sandbox captures the value as ``StepResult.final_answer``.
It is declared here so the prompt lists it with the other tools; the host never executes it.
"""

from __future__ import annotations

from typing import Annotated, Any

from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolArgumentError
from mmat.tools.registry import ToolEnv, tool

__all__ = ["final_answer"]


@tool(returns="nothing: the run ends with this answer", host=False, final=True)
def final_answer(answer: Annotated[Any, "The final answer to the task: a short text, a number, or a file name for an image answer."]) -> str:
    """Give the final answer to the task and finish. Call it once, when you have the answer."""


def _sandbox_status(env: ToolEnv) -> tuple[bool, str]:
    return True, "defined inside the sandbox; the tool host never runs it"


@final_answer.backend("sandbox", check=_sandbox_status)
def _final_answer_host(ctx: ToolContext, answer: Any) -> str:
    raise ToolArgumentError("final_answer runs inside the sandbox, not through the tool host; call it from the agent's code")
