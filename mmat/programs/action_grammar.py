"""A regex over one-tool-call steps, under which a small local controller's ``code`` is decoded.

Left free, the embedded 135M model writes prose in the ``code`` field (on a demo store: 0 of 12 sampled
first steps ran, 1 of 10 even compiled). Under this pattern a step is exactly one call of a listed tool
with keyword arguments, printed so its result comes back, or ``final_answer(...)``. Path arguments
(``image_path``, ``file_path``) take one of the task's file names; other arguments a short single-quoted
text. The prompt stays the agent's usual prompt (so finetuning data is unchanged in form); only the
decoding is narrowed, through the local provider's ``FIELD_PATTERNS_PARAM``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmat.programs.files import GeneratedFile

__all__ = ["action_pattern", "TEXT_ARGUMENT"]

TEXT_ARGUMENT = r"'[^'\"\\\n]{1,120}'"  # a short literal: no quotes, backslashes or newlines to escape
_NUMBER = r"-?[0-9]{1,9}(\.[0-9]{1,6})?"
_ANY_FILE = r"'[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}'"
_SPECIAL = set(r".^$*+?{}[]()|\-/")


def _literal(text: str) -> str:
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def _quotable(name: str) -> bool:
    return not any(c in name for c in "'\"\\\n")


def _file_choice(names: Sequence[str]) -> str:
    names = [n for n in names if _quotable(n)]
    return "'(" + "|".join(_literal(n) for n in names) + ")'" if names else _ANY_FILE


def _argument(name: str, files: Sequence[GeneratedFile]) -> str:
    if name == "image_path":
        return _file_choice([f.name for f in files if f.is_image] or [f.name for f in files])
    if name.endswith("path"):
        return _file_choice([f.name for f in files if not f.is_image] or [f.name for f in files])
    return TEXT_ARGUMENT


def action_pattern(tools: Sequence[str], files: Sequence[GeneratedFile]) -> str:
    """``print(tool(arg=...))`` for each of ``tools`` (required arguments, in their listed order), or
    ``final_answer(<text or number>)`` (the registry's final tool, always offered); one call, one line."""
    from mmat.tools import final_tool_names, tool_specs, without_final

    calls = []
    for spec in tool_specs(without_final(tools)):
        args = ", ".join(f"{name}={_argument(name, files)}" for name, p in spec["inputs"].items() if not p.get("nullable"))
        calls.append(f"print\\({_literal(spec['name'])}\\({args}\\)\\)")
    calls += [f"{_literal(name)}\\(({TEXT_ARGUMENT}|{_NUMBER})\\)" for name in final_tool_names()]
    return "^(" + "|".join(calls) + ")$"
