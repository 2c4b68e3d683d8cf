"""``ToolHost``: the tools as the sandbox sees them, run in the parent process.

Sandboxed code calls a tool through RPC; the parent calls :meth:`ToolHost.call` with the tool name
and keyword arguments (positional ones mapped with :meth:`ToolHost.signature`) and sends the text
back. Tool errors (:class:`~mmat.tools.errors.ToolError`) are the model's to read: the RPC layer
turns them into exceptions inside the sandbox. Anything else raised here is a bug in mmat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat.errors import ConfigError
from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolArgumentError
from mmat.tools.catalog import registered_tools
from mmat.tools.registry import REGISTRY, ToolStatus, get_tool, tools_named

if TYPE_CHECKING:  # pragma: no cover
    import dspy

    from mmat.config import Settings

__all__ = ["ToolHost", "MAX_OBSERVATION_CHARS"]

MAX_OBSERVATION_CHARS = 24_000  # no single observation may flood the agent's context


class ToolHost:
    """The tools one agent may call, bound to its workspace, settings and text model.

    ``names=None`` gives every host-run tool that has an available backend here (so the prompt lists
    only tools that work); explicit ``names`` are kept as given, and calling an unavailable one returns
    an error that says why. ``final_answer`` is never a host tool: the sandbox defines it.
    """

    def __init__(
        self,
        settings: Settings,
        workspace: Path,
        *,
        names: Iterable[str] | None = None,
        lm: dspy.LM | None = None,
        caption_lookup: Callable[[Path], str | None] | None = None,
    ) -> None:
        workspace = Path(workspace)
        if not workspace.is_dir():
            raise ConfigError(f"tool workspace {workspace} is not a directory: create it before starting the tools")
        self.context = ToolContext(settings, workspace, lm=lm, caption_lookup=caption_lookup)
        if names is None:
            env = self.context.env
            chosen = [t.name for t in registered_tools() if t.host and any(s.active for s in t.statuses(env))]
        else:
            wanted = list(names)
            registered_tools()  # plug-ins register on first use
            unknown = [n for n in wanted if n not in REGISTRY]
            if unknown:
                raise ConfigError(f"unknown tool(s) {', '.join(unknown)}: choose from {', '.join(REGISTRY)}")
            chosen = [t.name for t in tools_named(wanted) if t.host]
        self._names = chosen

    @property
    def workspace(self) -> Path:
        return self.context.workspace

    def for_workspace(self, workspace: Path) -> ToolHost:
        """The same tools, settings, text model and captions bound to another workspace (sandbox forks)."""
        ctx = self.context
        return ToolHost(ctx.settings, workspace, names=self._names, lm=ctx.lm, caption_lookup=ctx.caption_lookup)

    def names(self) -> list[str]:
        """Tools the sandbox should expose (registry order; never final_answer)."""
        return list(self._names)

    def signature(self, name: str) -> list[str]:
        """Parameter names of ``name`` in order, to map positional arguments to keywords."""
        return get_tool(self._checked(name)).param_names

    def status(self) -> list[ToolStatus]:
        env = self.context.env
        return [s for t in tools_named(self._names) for s in t.statuses(env)]

    def call(self, name: str, kwargs: dict[str, Any]) -> str:
        """Run one tool call and return its observation text; ToolErrors carry the model's mistakes."""
        result = get_tool(self._checked(name)).dispatch(self.context, kwargs)
        if len(result) > MAX_OBSERVATION_CHARS:
            result = result[:MAX_OBSERVATION_CHARS] + f"\n[observation truncated at {MAX_OBSERVATION_CHARS:,} characters]"
        return result

    def _checked(self, name: str) -> str:
        if name == "final_answer":
            raise ToolArgumentError("final_answer runs inside the sandbox, not through the tool host")
        if name not in self._names:
            offered = ", ".join(self._names) or "none"
            raise ToolArgumentError(f"unknown tool {name!r}; the tools you can call are: {offered}")
        return name
