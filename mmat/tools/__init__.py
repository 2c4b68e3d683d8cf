"""The agent's tools: a registry of typed tool declarations, each with offline backends.

``describe_tools`` renders them for the agent's prompt, ``WorkspaceToolHost`` runs them for the sandbox
(in the parent process, confined to the workspace), and ``tool_status`` says which backend of which
tool runs on this machine and why the others do not.
"""

from mmat.tools.builtin import TOOL_NAMES
from mmat.tools.catalog import (USE_TEACHER, agent_tools, available_tools, describe_tools, registered_tools, tool_specs,
                                tool_status)
from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolArgumentError, ToolError, ToolUnavailableError
from mmat.tools.host import WorkspaceToolHost
from mmat.tools.registry import (REGISTRY, Tool, ToolEnv, ToolStatus, final_tool_names, get_tool, is_final, tool, tool_names,
                                 without_final)
from mmat.tools.search import SIMULATED_LABEL
from mmat.tools.visualizer import DERIVED_LABEL

__all__ = [
    "WorkspaceToolHost",
    "describe_tools",
    "tool_specs",
    "tool_status",
    "available_tools",
    "agent_tools",
    "registered_tools",
    "tool_names",
    "final_tool_names",
    "is_final",
    "without_final",
    "ToolStatus",
    "ToolError",
    "ToolArgumentError",
    "ToolUnavailableError",
    "TOOL_NAMES",
    "REGISTRY",
    "Tool",
    "ToolEnv",
    "ToolContext",
    "tool",
    "get_tool",
    "USE_TEACHER",
    "DERIVED_LABEL",
    "SIMULATED_LABEL",
]
