"""The tool list as other parts of mmat need it: prompt text, JSON specs, availability rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mmat.tools.registry import Tool, ToolEnv, ToolStatus, tools_named

if TYPE_CHECKING:  # pragma: no cover
    from mmat.config import Settings

__all__ = ["describe_tools", "tool_specs", "tool_status", "available_tools", "agent_tools", "registered_tools",
           "USE_TEACHER"]


class _UseTeacher:
    def __repr__(self) -> str:
        return "USE_TEACHER"


USE_TEACHER: Any = _UseTeacher()  # tool_status(lm=...) default: tools get the settings' teacher as their text model


def registered_tools() -> list[Tool]:
    """Every tool — built-ins and plug-ins (loaded here once) — in prompt order."""
    from mmat.plugins import load_plugins

    load_plugins()
    return tools_named(None)


def describe_tools(names: Iterable[str] | None = None) -> str:
    """The agent prompt's tool list: one ``- name(params) -> str: description`` block per tool.

    The final tool (``final_answer``) is always listed last (the agent needs it to finish), named or not.
    """
    final = [t.name for t in registered_tools() if t.final]
    wanted = None if names is None else list(dict.fromkeys([*names, *final]))
    tools = tools_named(wanted)
    tools.sort(key=lambda t: t.final)
    return "\n".join(t.render() for t in tools)


def tool_specs(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """``{"name", "description", "inputs", "output"}`` per tool, for exports (e.g. ShareGPT tool lists)."""
    return [t.spec() for t in tools_named(names)]


def _env(settings: Settings | None, lm: Any) -> ToolEnv:
    from mmat.config import load_settings

    settings = settings or load_settings()
    if lm is USE_TEACHER:
        lm_name = settings.teacher
    elif lm is None or isinstance(lm, str):
        lm_name = lm
    else:
        lm_name = getattr(lm, "model", None)
    return ToolEnv(settings, lm_name)


def tool_status(settings: Settings | None = None, *, lm: Any = USE_TEACHER) -> list[ToolStatus]:
    """Every backend of every tool: available here or not, why, and which ones calls will use.

    ``lm`` is the text model the tools will get (a dspy.LM, a model string, or None); by default the
    settings' teacher, which is what an agent run hands its tools.
    """
    env = _env(settings, lm)
    return [s for t in registered_tools() for s in t.statuses(env)]


def available_tools(settings: Settings | None = None, *, lm: Any = USE_TEACHER) -> list[str]:
    """Names of the tools that can run here (at least one active backend), in prompt order."""
    env = _env(settings, lm)
    return [t.name for t in registered_tools() if any(s.active for s in t.statuses(env))]


def agent_tools(settings: Settings | None = None, *, lm: Any = USE_TEACHER) -> list[str]:
    """The tools a task may intend: those that run here, without the final tool (always offered anyway)."""
    env = _env(settings, lm)
    return [t.name for t in registered_tools() if not t.final and any(s.active for s in t.statuses(env))]
