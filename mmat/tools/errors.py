"""Errors raised by tools.

A tool error is an *observation*: the sandbox RPC turns it into an exception inside the agent's code,
so the model reads the message and can fix its next step. Messages therefore name the tool, the
argument at fault and what to do instead. Failures that the user must fix (a rejected API key, an
invalid setting) are ``ConfigError``s instead and stop the run.
"""

from mmat.errors import MmatError

__all__ = ["ToolError", "ToolArgumentError", "ToolUnavailableError"]


class ToolError(MmatError):
    """A tool could not produce a result for this call (unreadable input, a model answer it cannot use)."""


class ToolArgumentError(ToolError):
    """The call itself is wrong: unknown tool or argument, wrong type, a path outside the workspace, a missing file."""


class ToolUnavailableError(ToolError):
    """No backend of the tool can run on this machine with these settings; the message lists why for each."""
