"""`mmat doctor`: which sandbox mode this machine gets, what each part of the isolation rests on here,
and a real sandbox started to prove it."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from mmat.errors import MmatError, SandboxError
from mmat.sandbox.cgroups import cgroup_support
from mmat.sandbox.limits import Limits
from mmat.sandbox.modes import USERNS_HELP, probe_rootless, sandbox_mode
from mmat.sandbox.seccomp import seccomp_program

__all__ = ["sandbox_report"]


def _row(check: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": check, "status": "ok" if ok else "no", "detail": detail}


def sandbox_report(limits: Limits | None = None, *, try_run: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """(rows, usable): one row per check; usable is False when Sandbox() cannot work here."""
    limits = limits or Limits()
    rows: list[dict[str, Any]] = []
    try:
        mode = sandbox_mode()
    except SandboxError as e:
        rows.append(_row("sandbox mode", False, str(e)))
        return rows, False
    rows.append({"check": "sandbox mode", "status": mode.name, "detail": mode.reason})
    if mode.name == "root":
        rows.append(_row("user namespaces", True, "not needed as root"))
    else:
        works, why = probe_rootless()
        rows.append(_row("user namespaces", works, why if works else f"{why}; {USERNS_HELP}"))
    try:
        seccomp_program()
        rows.append(_row("seccomp filter", True, "compiled with pyseccomp (libseccomp)"))
    except SandboxError as e:
        rows.append(_row("seccomp filter", False, str(e)))
        return rows, False
    support = cgroup_support()
    freeze = support["freeze"]
    rows.append(
        _row("freeze between steps", True, freeze if not freeze.startswith("unavailable") else f"SIGSTOP to the sandbox's PID namespace by its init ({freeze})")
    )
    memory = support["memory"]
    if memory.startswith("unavailable"):
        bound = limits.max_processes * limits.memory_mb
        memory = f"per process only: RLIMIT_AS {limits.memory_mb} MiB x at most {limits.max_processes} tasks = {bound} MiB ({memory})"
    rows.append(_row("whole-sandbox memory", not support["memory"].startswith("unavailable"), memory))
    pids = support["pids"]
    if pids.startswith("unavailable"):
        scope = "the sandbox's own uid" if mode.name == "root" else "the sandbox's uid in its user namespace"
        pids = f"RLIMIT_NPROC {limits.max_processes} on {scope} ({pids})"
    rows.append(_row("whole-sandbox tasks", True, pids))
    if try_run:
        rows.append(_try_sandbox())
    return rows, all(r["status"] != "no" or r["check"] == "whole-sandbox memory" for r in rows)


def _try_sandbox() -> dict[str, Any]:
    from mmat.sandbox.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="mmat-doctor-") as ws:
        try:
            t0 = time.perf_counter()
            with Sandbox(ws, limits=Limits(wall_s=10)) as sb:
                started = (time.perf_counter() - t0) * 1000
                r = sb.run("print(6 * 7)")
            if r.error is None and r.stdout.strip() == "42":
                from mmat.sandbox.process import launch_method

                detail = f"started in {started:.0f} ms ({sb.mode.name} mode, worker uid {sb.uid}; launcher {launch_method()}), ran print(6 * 7)"
                return _row("a real sandbox", True, detail)
            return _row("a real sandbox", False, f"ran but printed {r.stdout!r} ({r.error})")
        except MmatError as e:
            return _row("a real sandbox", False, str(e))
