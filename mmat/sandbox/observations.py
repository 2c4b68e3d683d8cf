"""How the sandbox's own failures read to the model: limits, crashes, a broken channel.

These texts become StepError messages and stdout notes, i.e. the observation the controller sees
next step, so each one says what happened, what was lost and what to do differently.
"""

from __future__ import annotations

import signal

from mmat.errors import ModelOutputError
from mmat.sandbox.escape import escape_text
from mmat.sandbox.limits import Limits
from mmat.sandbox.protocol import DoneMsg
from mmat.sandbox.results import StepError

__all__ = [
    "limit_text", "limit_error", "death_error", "protocol_error", "workspace_error", "lost_worker_error",
    "step_stdout", "is_model_facing", "RESTARTED_BEFORE_NOTE", "removed_note", "freeze_error", "tampered_note",
]  # fmt: skip

MIB = 1024 * 1024
_LOST = "The sandbox was restarted, so variables, imports and functions from earlier steps are gone"
RESTARTED_BEFORE_NOTE = (
    "[sandbox] The Python process had exited after the previous step and was restarted before this one: "
    "variables, imports and functions from earlier steps are gone."
)


def limit_text(limits: Limits, kind: str) -> str:
    return {
        "wall_time": f"steps are limited to {limits.wall_s:g} s of wall time",
        "cpu_time": f"steps are limited to {limits.cpu_s:g} s of CPU time",
        "memory": f"the sandbox's memory limit is {limits.memory_mb} MiB",
        "file_size": f"files are limited to {limits.file_size_mb} MiB",
        "tool_calls": f"a step may make at most {limits.max_tool_calls} tool calls",
    }[kind]


def limit_error(limits: Limits, kind: str) -> StepError:
    """A step the parent stopped (wall time, CPU time, tool calls)."""
    names = {"wall_time": "TimeoutError", "cpu_time": "TimeoutError", "tool_calls": "ToolError", "memory": "MemoryError"}
    return StepError(type=names[kind], message=f"the step was stopped: {limit_text(limits, kind)}. {_LOST}; do less per step.")


def death_error(limits: Limits, signal_no: int | None, exit_code: int | None, cpu_s: float) -> tuple[str | None, StepError]:
    """(limit hit or None, error) for a worker that died during a step."""
    cpu_hit = signal_no == signal.SIGXCPU or (signal_no == signal.SIGKILL and cpu_s >= limits.worker_cpu_s - 1)
    if cpu_hit:
        return "cpu_time", limit_error(limits, "cpu_time")
    if signal_no is not None:
        try:
            how = f"was killed by {signal.Signals(signal_no).name}"
        except ValueError:
            how = f"was killed by signal {signal_no}"
    elif exit_code is not None:
        how = f"exited with code {exit_code} (os._exit() or a crash)"
    else:
        how = "ended unexpectedly"
    return None, StepError(type="SandboxCrash", message=f"the sandbox's Python process {how}. {_LOST}.")


def freeze_error() -> StepError:
    return StepError(
        type="SandboxCrash",
        message=f"the sandbox could not be stopped (a process stayed busy in the kernel for seconds, e.g. on a huge write). {_LOST}.",
    )


def lost_worker_error() -> StepError:
    return StepError(type="SandboxCrash", message=f"the sandbox's Python process exited before it could run this step. {_LOST}.")


def protocol_error(detail: str) -> StepError:
    return StepError(
        type="SandboxProtocolError",
        message=f"the step broke the sandbox's control channel ({detail}); do not write to or close file descriptors 3 and 4. {_LOST}.",
    )


def workspace_error(limits: Limits, total_bytes: int, deleted: int, *, inodes: int | None = None, full: str | None = None) -> StepError:
    """The workspace went over its quota: bytes, entries (inodes), or a full workspace tmpfs."""
    if inodes is not None and (full == "inodes" or inodes > limits.workspace_inodes):
        what = f"the workspace reached {inodes} files and directories, over its limit of {limits.workspace_inodes}"
    elif full == "bytes" and total_bytes <= limits.workspace_bytes:
        what = (
            f"the workspace is full, over its {limits.workspace_mb} MiB limit ({total_bytes / MIB:.1f} MiB in files; "
            "space is counted in whole 4 KiB pages, so many small files fill it sooner)"
        )
    else:
        what = f"the workspace grew to {total_bytes / MIB:.1f} MiB, over its {limits.workspace_mb} MiB limit"
    return StepError(type="OSError", message=f"{what}; the {deleted} file(s) this step created were deleted. {_LOST}.")


def tampered_note(what: str) -> str:
    return (
        f"[sandbox] The step changed the sandbox's own code ({what}); the Python process was restarted "
        "from a clean copy, so variables, imports and functions from earlier steps are gone."
    )


def removed_note(rel: str) -> str:
    return f"[sandbox] removed {escape_text(rel)[:300]}: symlinks and special files are not allowed in the workspace"


def step_stdout(msg: DoneMsg) -> str:
    """Printed output, then child-process output, each with a note when it was cut."""
    parts = [msg.stdout]
    if msg.stdout_dropped:
        parts.append(f"\n[... {msg.stdout_dropped} more characters of output not shown]\n")
    if msg.child_output:
        parts.append(f"\n[output of child processes]\n{msg.child_output}")
        if msg.child_output_dropped:
            parts.append(f"\n[... {msg.child_output_dropped} more bytes not shown]\n")
    return "".join(parts)


def is_model_facing(exc: Exception) -> bool:
    """Tool failures the model must read: any exception class named ToolError/ToolArgumentError (the
    tool host's own classes; matched by name so any host can use them) and ModelOutputError (a
    tool's model answered badly). Everything else is a bug or a setting for a person to fix."""
    if isinstance(exc, ModelOutputError):
        return True
    return any(cls.__name__ in ("ToolError", "ToolArgumentError") for cls in type(exc).__mro__)
