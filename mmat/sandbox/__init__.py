"""Run model-written Python in an isolated worker process with persistent state, limits and tool RPC.

See mmat.sandbox.sandbox for exactly what is isolated and how.
"""

from mmat.sandbox.limits import Limits
from mmat.sandbox.protocol import ToolHost
from mmat.sandbox.results import StepError, StepResult, ToolCall
from mmat.sandbox.pool import SandboxPool
from mmat.sandbox.sandbox import Sandbox

__all__ = ["Sandbox", "SandboxPool", "Limits", "StepResult", "StepError", "ToolCall", "ToolHost"]
