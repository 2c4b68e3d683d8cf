"""Compiled program files: DSPy's own JSON state plus an ``mmat`` header saying what it is.

``mmat optimize`` saves the optimized program with DSPy's ``Module.save`` (demos, instructions, field
descriptions per predictor) and adds one key, ``mmat``, naming the mmat version, the program and the
module it came from. DSPy's ``load`` ignores that key, so the file stays a plain DSPy state file; mmat
reads it first, so a file from another program, another mmat major version, or no mmat at all fails
with a ConfigError instead of loading demos into the wrong predictors.

A file compiled for one stage loads into that stage wherever it lives: into the bare module (a
``CodeAgent`` used by ``mmat eval``) or into the matching sub-module of the ``Synthesis`` composition.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

import mmat
from mmat.errors import ConfigError

__all__ = ["CompiledHeader", "FORMAT", "save_compiled", "read_header", "load_compiled", "find_stage", "state_digest",
           "describe_loaded"]

FORMAT = "mmat-compiled-program"
FORMAT_VERSION = 1
HEADER_KEY = "mmat"
# `mmat optimize --program NAME` -> the _mmat_name of the module it compiles (the same name unless listed)
_PROGRAM_MODULE = {"agent": "code_agent"}


class CompiledHeader(BaseModel):
    """What a compiled file holds and how it was made."""

    model_config = ConfigDict(extra="allow")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    mmat_version: str
    program: str  # the name `mmat optimize --program` took (query_generator, agent, ...)
    module: str  # the module's _mmat_name (query_generator, code_agent, ...)
    module_class: str
    optimizer: str | None = None
    opt_run_id: str | None = None
    metric_before: float | None = None
    metric_after: float | None = None


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def save_compiled(module: Any, path: Path, header: CompiledHeader) -> Path:
    """Save ``module`` with DSPy's ``save`` and put ``header`` first in the same JSON file."""
    path = Path(path)
    if path.suffix != ".json":
        raise ConfigError(f"{path}: a compiled program is saved as JSON; give a path ending in .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    module.save(str(path))
    state = json.loads(path.read_text(encoding="utf-8"))
    state = {HEADER_KEY: header.model_dump(mode="json"), **state}
    path.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read_header(path: Path) -> tuple[CompiledHeader, dict[str, Any]]:
    """The header and the DSPy state of a compiled file; ConfigError when it is not one this mmat can load."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: pass the JSON file `mmat optimize --out` wrote")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a compiled mmat program (not JSON: {e}); pass a file `mmat optimize` wrote") from None
    raw = state.get(HEADER_KEY) if isinstance(state, dict) else None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(
            f"{path} is not a compiled mmat program (no '{HEADER_KEY}' header with format {FORMAT!r}); "
            "compile one with `mmat optimize --program NAME --out FILE.json`"
        )
    try:
        header = CompiledHeader.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path} has a damaged mmat header ({e.errors()[0]['msg']}); compile it again with `mmat optimize`") from None
    if header.format_version > FORMAT_VERSION:
        raise ConfigError(
            f"{path} uses compiled-file format {header.format_version}, newer than this mmat reads ({FORMAT_VERSION}): "
            "upgrade mmat or compile it again"
        )
    if _major(header.mmat_version) != _major(mmat.__version__):
        raise ConfigError(
            f"{path} was compiled with mmat {header.mmat_version}, expected mmat {_major(mmat.__version__)}.x "
            f"(this is {mmat.__version__}): compile it again with `mmat optimize --program {header.program}`"
        )
    return header, state


def find_stage(program_module: Any, module_name: str) -> Any | None:
    """The module named ``module_name`` (its ``_mmat_name``): ``program_module`` itself or one of its sub-modules."""
    if getattr(program_module, "_mmat_name", None) == module_name:
        return program_module
    named = getattr(program_module, "named_sub_modules", None)
    if named is None:
        return None
    for _, sub in named():
        if sub is not program_module and getattr(sub, "_mmat_name", None) == module_name:
            return sub
    return None


def _stage_names(program_module: Any) -> list[str]:
    import dspy

    names = []
    for _, sub in program_module.named_sub_modules():
        name = getattr(sub, "_mmat_name", None)
        if isinstance(sub, dspy.Module) and not isinstance(sub, dspy.Predict) and name and name not in names:
            names.append(name)
    return names


def load_compiled(program_module: Any, path: Path) -> Any:
    """Load a compiled file into ``program_module`` (or its matching sub-module); returns the module loaded.

    The header must name a module that ``program_module`` is or contains: a compiled ``query_generator``
    loads into a ``QueryGenerator`` or into ``synthesis.query_generator``. Anything else is a ConfigError
    that names what was expected and what the file holds.
    """
    path = Path(path)
    header, state = read_header(path)
    if _PROGRAM_MODULE.get(header.program, header.program) != header.module:
        raise ConfigError(
            f"{path}: its header names program {header.program!r} but module {header.module!r}, which do not belong "
            f"together (the file was edited or damaged): compile it again with `mmat optimize --program {header.program}`"
        )
    target = find_stage(program_module, header.module)
    if target is not None and type(target).__name__ != header.module_class:
        raise ConfigError(
            f"{path}: its header names {header.module_class} but the {header.module} stage is a "
            f"{type(target).__name__}: compile it again with `mmat optimize --program {header.program}`"
        )
    if target is None:
        found = ", ".join(_stage_names(program_module)) or type(program_module).__name__
        raise ConfigError(
            f"{path} holds a compiled {header.program} ({header.module_class}), but the program given has no "
            f"{header.module} stage (it has: {found}); pass a file compiled for one of those"
        )
    expected = {name for name, _ in target.named_parameters()}
    stored = {k for k in state if k not in (HEADER_KEY, "metadata")}
    if expected != stored:
        raise ConfigError(
            f"{path} holds predictors {sorted(stored)} but {header.module} has {sorted(expected)}: it was compiled "
            f"from another version of the program; compile it again with `mmat optimize --program {header.program}`"
        )
    target.load_state({k: v for k, v in state.items() if k in expected})
    return target


def state_digest(module: Any) -> str:
    """sha256 of a module's DSPy state (demos, instructions, fields): equal digests, equal programs."""
    state = module.dump_state()
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def describe_loaded(path: Path, target: Any) -> str:
    """One line saying what ``load_compiled`` put where (synth prints it)."""
    header, state = read_header(Path(path))
    demos = sum(len(v.get("demos") or []) for k, v in state.items() if isinstance(v, dict) and k != HEADER_KEY)
    figures = ""
    if header.metric_before is not None and header.metric_after is not None:
        figures = f", metric {header.metric_before:.3f} -> {header.metric_after:.3f}"
    return (f"loaded {path}: compiled {header.program} ({header.optimizer or 'unknown optimizer'}{figures}, "
            f"{demos} demo(s), run {header.opt_run_id or '-'}) into the {target._mmat_name} stage")
