"""The tool registry: a tool is a typed declaration plus one or more backends.

A tool is declared once, as a Python function whose signature the agent sees (parameters annotated
with ``Annotated[type, "description"]``) and whose docstring is the description rendered into the
agent's system prompt. Its body is the docstring only: the work is done by backends, registered with
``@my_tool.backend(name, check=...)``. Each backend says whether it can run here (``check`` returns
``(available, reason)``), so ``mmat tools`` can explain every gap, and a call goes to the first backend
that is both selected and available::

    @tool(returns="the text found in the image, one line per text line with its box")
    def ocr(image_path: Annotated[str, "Image file in the workspace."]) -> str:
        \"\"\"Extract the text written in an image.\"\"\"

    @ocr.backend("rapidocr", check=rapidocr_available)
    def _ocr_rapidocr(ctx: ToolContext, image_path: str) -> str: ...

Keeping the declaration separate from the backends is what lets an offline backend and a model-backed
one answer the same call, and lets trajectories made with either be compared.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from mmat.tools.errors import ToolArgumentError, ToolUnavailableError

if TYPE_CHECKING:  # pragma: no cover - import for annotations only
    from mmat.config import Settings
    from mmat.tools.context import ToolContext

__all__ = [
    "Param",
    "Backend",
    "Tool",
    "ToolEnv",
    "ToolStatus",
    "REGISTRY",
    "tool",
    "get_tool",
    "tool_names",
    "final_tool_names",
    "is_final",
    "without_final",
]

Check = Callable[["ToolEnv"], tuple[bool, str]]


@dataclass(frozen=True)
class ToolEnv:
    """What availability checks may look at: the settings and the name of the text model tools get.

    ``lm_name`` is None when no text model is handed to the tools; backends that need one (image_edit,
    simulated search, ...) are then unavailable.
    """

    settings: Settings
    lm_name: str | None


class ToolStatus(BaseModel):
    """One backend of one tool on this machine: can it run, why (not), and will calls go to it."""

    tool: str
    backend: str
    available: bool
    reason: str
    active: bool
    source: str = "mmat"


@dataclass(frozen=True)
class Param:
    """One parameter of a tool as the agent sees it."""

    name: str
    annotation: Any
    description: str
    required: bool
    default: Any = None

    def render(self) -> str:
        text = f"{self.name}: {type_name(self.annotation)}"
        return text if self.required else f"{text} = {self.default!r}"

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": json_type(self.annotation), "description": self.description}
        if not self.required:
            schema["nullable"] = True
        return schema


def _always_available(env: ToolEnv) -> tuple[bool, str]:
    return True, "pure Python, always available"


@dataclass
class Backend:
    """One way of running a tool. ``accepts(kwargs)`` narrows it to some inputs (e.g. audio files)."""

    name: str
    fn: Callable[..., str]
    check: Check = _always_available
    accepts: Callable[[dict[str, Any]], bool] | None = None

    def status(self, env: ToolEnv) -> tuple[bool, str]:
        available, reason = self.check(env)
        return bool(available), reason


@dataclass
class Tool:
    """A registered tool: declaration (name, params, description) and its backends in priority order."""

    name: str
    description: str
    params: tuple[Param, ...]
    returns: str
    host: bool = True  # False: defined inside the sandbox (final_answer); the host never runs it
    backends: dict[str, Backend] = field(default_factory=dict)
    select: Callable[[ToolEnv], list[str]] | None = None
    final: bool = False  # ends the trajectory (final_answer): always offered, never an "intended" tool
    source: str = "mmat"  # the package that registered it ("mmat" for built-ins; a plug-in's module otherwise)

    # --- registration --------------------------------------------------------------------------
    def backend(
        self, name: str, *, check: Check | None = None, accepts: Callable[[dict[str, Any]], bool] | None = None
    ) -> Callable[[Callable[..., str]], Callable[..., str]]:
        """Register ``fn(ctx, **params) -> str`` as a backend; its parameters must match the declaration."""

        def register(fn: Callable[..., str]) -> Callable[..., str]:
            names = list(inspect.signature(fn).parameters)[1:]
            if names != self.param_names:
                raise TypeError(f"backend {name!r} of tool {self.name!r} takes {names}, the tool declares {self.param_names}")
            if name in self.backends:
                raise TypeError(f"tool {self.name!r} already has a backend named {name!r}")
            self.backends[name] = Backend(name, fn, check or _always_available, accepts)
            return fn

        return register

    def selector(self, fn: Callable[[ToolEnv], list[str]]) -> Callable[[ToolEnv], list[str]]:
        """Register the function that picks which backends, in which order, settings allow."""
        self.select = fn
        return fn

    # --- introspection ---------------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def render(self) -> str:
        """``- ocr(image_path: str) -> str: Extract ...`` plus one indented line per parameter."""
        head = f"- {self.name}({', '.join(p.render() for p in self.params)}) -> str: {self.description}"
        lines = [head] + [f"    {p.name}: {p.description}" for p in self.params]
        lines.append(f"    returns: {self.returns}")
        return "\n".join(lines)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": {p.name: p.json_schema() for p in self.params},
            "output": {"type": "string", "description": self.returns},
        }

    def selected(self, env: ToolEnv) -> list[Backend]:
        names = self.select(env) if self.select else list(self.backends)
        return [self.backends[n] for n in names]

    def statuses(self, env: ToolEnv) -> list[ToolStatus]:
        selected = self.selected(env)
        chosen = {id(b) for b in selected}
        rows, claimed = [], set()
        for b in selected + [b for b in self.backends.values() if id(b) not in chosen]:
            available, reason = b.status(env)
            if id(b) not in chosen:
                available, reason = False, f"not selected by the settings ({reason})"
            active = available and b.accepts not in claimed
            if active:
                claimed.add(b.accepts)
            rows.append(ToolStatus(tool=self.name, backend=b.name, available=available, reason=reason, active=active,
                                   source=self.source))
        return rows

    # --- calling ---------------------------------------------------------------------------------
    def bind(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validate the model's arguments against the declaration; fill defaults."""
        if not isinstance(kwargs, dict):
            raise ToolArgumentError(f"{self.name}: arguments must be passed as keywords, got {type(kwargs).__name__}")
        usage = f"{self.name}({', '.join(p.render() for p in self.params)})"
        unknown = [k for k in kwargs if k not in self.param_names]
        if unknown:
            raise ToolArgumentError(f"{self.name}: unexpected argument {unknown[0]!r}; call it as {usage}")
        bound: dict[str, Any] = {}
        for p in self.params:
            if p.name not in kwargs:
                if p.required:
                    raise ToolArgumentError(f"{self.name}: missing argument {p.name!r}; call it as {usage}")
                bound[p.name] = p.default
                continue
            try:
                bound[p.name] = TypeAdapter(p.annotation).validate_python(kwargs[p.name])
            except ValidationError:
                got = type(kwargs[p.name]).__name__
                raise ToolArgumentError(
                    f"{self.name}: argument {p.name!r} must be {type_name(p.annotation)}, got {got}; call it as {usage}"
                ) from None
        return bound

    def dispatch(self, ctx: ToolContext, kwargs: dict[str, Any]) -> str:
        """Run the call on the first selected, available backend that accepts these arguments."""
        bound = self.bind(kwargs)
        env = ctx.env
        reasons = []
        for b in self.selected(env):
            if b.accepts is not None and not b.accepts(bound):
                continue
            available, reason = b.status(env)
            if available:
                result = b.fn(ctx, **bound)
                if not isinstance(result, str):
                    raise TypeError(f"backend {b.name!r} of {self.name!r} returned {type(result).__name__}, not str")
                return result
            reasons.append(f"{b.name}: {reason}")
        why = "; ".join(reasons) or "no backend handles these arguments"
        raise ToolUnavailableError(f"{self.name} cannot run here ({why}). Solve this step without {self.name}.")

    def __call__(self, ctx: ToolContext, **kwargs: Any) -> str:
        return self.dispatch(ctx, kwargs)


REGISTRY: dict[str, Tool] = {}


def tool(*, returns: str, name: str | None = None, host: bool = True, final: bool = False
         ) -> Callable[[Callable[..., Any]], Tool]:
    """Declare a tool from a function: its signature is the tool's, its docstring the description.

    Works the same from a user's package (see ``mmat.plugins``): the tool joins the registry, the
    agent prompt, ``mmat tools`` and ``mmat synth --tools``.
    """

    def declare(fn: Callable[..., Any]) -> Tool:
        tool_name = name or fn.__name__
        if tool_name in REGISTRY:
            raise TypeError(f"a tool named {tool_name!r} is already registered")
        if not fn.__doc__:
            raise TypeError(f"tool {tool_name!r} needs a docstring: it is the description the agent reads")
        hints = typing.get_type_hints(fn, include_extras=True)
        params = []
        for p in inspect.signature(fn).parameters.values():
            hint = hints.get(p.name)
            if typing.get_origin(hint) is not Annotated or not isinstance(hint.__metadata__[0], str):
                raise TypeError(f"parameter {p.name!r} of tool {tool_name!r} must be Annotated[type, 'description']")
            required = p.default is inspect.Parameter.empty
            params.append(Param(p.name, hint.__origin__, hint.__metadata__[0], required, None if required else p.default))
        module = fn.__module__ or ""
        source = "mmat" if module == "mmat" or module.startswith("mmat.") else module
        declared = Tool(tool_name, " ".join(inspect.cleandoc(fn.__doc__).split()), tuple(params), returns, host,
                        final=final, source=source)
        REGISTRY[tool_name] = declared
        return declared

    return declare


def tool_names(*, include_final: bool = True) -> list[str]:
    """Every registered tool in prompt order (built-ins first, then plug-ins as they registered)."""
    return [t.name for t in REGISTRY.values() if include_final or not t.final]


def final_tool_names() -> list[str]:
    """The tools that end a run (``Tool.final``; built in: ``final_answer``), in registry order."""
    return [t.name for t in REGISTRY.values() if t.final]


def is_final(name: str) -> bool:
    """Whether ``name`` is a registered tool that ends a run (unknown names are not)."""
    found = REGISTRY.get(name)
    return found is not None and found.final


def without_final(names: Iterable[str]) -> list[str]:
    """``names`` without the tools that end a run (they are always offered, never a task's intended tool);
    order kept, unknown names kept (their callers report them)."""
    return [n for n in names if not is_final(n)]


def get_tool(name: str) -> Tool:
    """The registered tool called ``name``; an unknown name is a ToolArgumentError listing the tools."""
    if name not in REGISTRY:
        raise ToolArgumentError(f"unknown tool {name!r}; the tools are: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def tools_named(names: Iterable[str] | None) -> list[Tool]:
    """Tools in registry order; ``None`` means all of them."""
    if names is None:
        return list(REGISTRY.values())
    wanted = list(names)
    for n in wanted:
        get_tool(n)
    return [t for t in REGISTRY.values() if t.name in wanted]


# --- rendering types for the prompt and for JSON specs ---------------------------------------------
def type_name(annotation: Any) -> str:
    """``str``, ``str | None``, ``list[float]``: how the agent writes the type in Python."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def json_type(annotation: Any) -> str:
    """JSON-schema type name of an annotation; for unions, the first non-None member's."""
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return json_type(members[0])
    return _JSON_TYPES.get(origin or annotation, "string")
