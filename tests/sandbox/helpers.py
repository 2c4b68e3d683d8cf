"""Helpers for the sandbox tests: a tiny fake tool host, short limits, a liveness check.

The sandbox needs root or working unprivileged user namespaces (mmat.sandbox.modes); without
either these tests are skipped with the reason, the rest of the suite still runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mmat.errors import SandboxError
from mmat.sandbox import Limits, Sandbox, safefs
from mmat.sandbox.modes import sandbox_mode



def _no_sandbox_reason() -> str | None:
    try:
        sandbox_mode()
    except SandboxError as e:
        return str(e)
    return None


_REASON = _no_sandbox_reason()
needs_sandbox = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
# The name the sandbox tests were written with: a sandbox no longer needs root, only one of the modes.
needs_root = needs_sandbox
ROOTLESS = os.geteuid() != 0

def view(path: Path) -> Path:
    """Where the parent sees a workspace's files *now*, while its sandbox is open: the path itself in
    root mode (the quota tmpfs is over it), the sandbox's tmpfs through its fd in rootless mode (the
    directory itself gets the files back on close)."""
    return safefs.live_path(path)


# Short wall time so that runaway-code tests finish quickly; everything else stays at its default.
FAST = Limits(wall_s=3.0, start_timeout_s=30.0)


class ToolError(Exception):
    """Stands in for mmat.tools' ToolError: the sandbox matches tool errors by class name."""


class ToolArgumentError(ToolError):
    pass


class FakeTools:
    """A ToolHost with a few deterministic tools, bound to one workspace (like mmat.tools.WorkspaceToolHost)."""

    PARAMS = {"add": ["a", "b"], "shout": ["text"], "fail": ["why"], "read_file": ["path"], "make_image": ["name"], "crash": []}

    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [*self.PARAMS, "final_answer"]

    def signature(self, name: str) -> list[str]:
        return self.PARAMS[name]

    def call(self, name: str, kwargs: dict[str, Any]) -> str:
        self.calls.append((name, kwargs))
        if name == "add":
            return str(kwargs["a"] + kwargs["b"])
        if name == "shout":
            return str(kwargs["text"]).upper()
        if name == "fail":
            raise ToolArgumentError(f"fail: {kwargs.get('why', 'no reason')}")
        if name == "read_file":
            # Deliberately naive: opens the path on the HOST (following links), so tests can show the
            # sandbox removes links and FIFOs before any tool sees them.
            path = view(self.workspace) / kwargs["path"]
            if not path.is_file():
                raise ToolArgumentError(f"read_file: {kwargs['path']!r} is not a file in the workspace")
            return path.read_text()
        if name == "make_image":
            (view(self.workspace) / kwargs["name"]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
            return f"Saved image to {kwargs['name']}"
        if name == "crash":
            raise KeyError("a bug in the tool host")
        raise ToolArgumentError(f"unknown tool {name}")

    def for_workspace(self, path: Path) -> FakeTools:
        return FakeTools(path)



def alive(sb: Sandbox) -> None:
    """The parent survived and the sandbox still runs code."""
    r = sb.run("print(6 * 7)")
    assert r.error is None, r.error
    assert r.stdout.strip() == "42"
