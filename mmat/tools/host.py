"""``WorkspaceToolHost``: mmat's implementation of the sandbox's ``ToolHost`` protocol
(:class:`mmat.sandbox.protocol.ToolHost`): the registered tools bound to one workspace, run in the
parent process.

Sandboxed code calls a tool through RPC; the parent calls :meth:`WorkspaceToolHost.call` with the tool name
and keyword arguments (positional ones mapped with :meth:`WorkspaceToolHost.signature`) and sends the text
back. Tool errors (:class:`~mmat.tools.errors.ToolError`) are the model's to read: the RPC layer
turns them into exceptions inside the sandbox. Anything else raised here is a bug in mmat.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat.errors import ConfigError
from mmat.tools.context import ToolContext
from mmat.tools.catalog import registered_tools
from mmat.tools.errors import ToolArgumentError, ToolError
from mmat.tools.registry import REGISTRY, ToolStatus, get_tool, tools_named

if TYPE_CHECKING:  # pragma: no cover
    import dspy

    from mmat.config import Settings

__all__ = ["WorkspaceToolHost", "MAX_OBSERVATION_CHARS", "TOOL_TIMEOUT_S"]

MAX_OBSERVATION_CHARS = 24_000  # no single observation may flood the agent's context
# Wall time of one tool call. Decoding untrusted files has its own, shorter bound (mmat.tools.bounded);
# this one covers the rest (model inference, a slow text-model API) so a step never waits forever.
TOOL_TIMEOUT_S = 120.0


class WorkspaceToolHost:
    """The tools one agent may call, bound to its workspace, settings and text model (implements
    ``mmat.sandbox.protocol.ToolHost``).

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
        timeout_s: float = TOOL_TIMEOUT_S,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"WorkspaceToolHost timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
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

    def for_workspace(self, workspace: Path) -> WorkspaceToolHost:
        """The same tools, settings, text model and captions bound to another workspace (sandbox forks)."""
        ctx = self.context
        return WorkspaceToolHost(ctx.settings, workspace, names=self._names, lm=ctx.lm, caption_lookup=ctx.caption_lookup,
                        timeout_s=self.timeout_s)

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
        tool = get_tool(self._checked(name))
        result = _within(self.timeout_s, name, lambda: tool.dispatch(self.context, kwargs))
        if len(result) > MAX_OBSERVATION_CHARS:
            result = result[:MAX_OBSERVATION_CHARS] + f"\n[observation truncated at {MAX_OBSERVATION_CHARS:,} characters]"
        return result

    def _checked(self, name: str) -> str:
        declared = REGISTRY.get(name)
        if declared is not None and not declared.host:  # final_answer: the sandbox defines it
            raise ToolArgumentError(f"{name} runs inside the sandbox, not through the tool host")
        if name not in self._names:
            offered = ", ".join(self._names) or "none"
            raise ToolArgumentError(f"unknown tool {name!r}; the tools you can call are: {offered}")
        return name


def _within(timeout_s: float, name: str, work: Callable[[], str]) -> str:
    """``work()`` with a wall-time deadline: past it, a ToolError the model reads.

    The call runs in its own thread (with this thread's context variables, so DSPy settings and
    callbacks apply); at the deadline it is abandoned, not killed -- Python cannot stop a thread --
    and finishes (or not) in the background. What it may still write lands in the workspace as
    any tool output does. The decoders of untrusted files are killable child processes."""
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def run() -> None:
        try:
            box["result"] = ctx.run(work)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread, which re-raises it
            box["error"] = e

    worker = threading.Thread(target=run, name=f"mmat-tool-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ToolError(f"{name} did not finish within {timeout_s:g} s and was stopped; try a smaller input or another tool")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]
