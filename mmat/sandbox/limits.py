"""Resource limits of one sandbox: named constants, each with the reason for its default.

A step that exceeds a limit is killed (or stopped by the kernel), reported as an observation the
model can read, and the worker is restarted with its state lost. Limits are per sandbox, so
several sandboxes running in parallel each get their own budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmat.errors import ConfigError

if TYPE_CHECKING:
    from mmat.config import Settings

__all__ = ["Limits", "LIMIT_NAMES", "MIB"]

MIB = 1024 * 1024

# Wall time of one step, not counting the time the parent spends serving tool calls (a tool backed
# by a model may legitimately take longer than the code that calls it). MAT's executor used 30 s.
DEFAULT_WALL_S = 30.0
# CPU seconds one step may burn in the worker process. Twice the wall time: numpy/OpenCV threads
# may use two cores; anything more is a runaway loop that the wall clock would stop anyway.
DEFAULT_CPU_S = 60.0
# CPU seconds over the worker's whole life (the kernel's hard RLIMIT_CPU, which an unprivileged
# process can lower but never raise). Bounds background threads that outlive their step.
DEFAULT_WORKER_CPU_S = 1800.0
# Address space per process (RLIMIT_AS). numpy + PIL + cv2 + matplotlib import in ~650 MiB of
# address space; 2 GiB leaves room for a few full-resolution images.
DEFAULT_MEMORY_MB = 2048
# Largest single file a step may write (RLIMIT_FSIZE): larger than any image or document a task needs.
DEFAULT_FILE_SIZE_MB = 64
# All regular files in the workspace (inputs included): in root mode a tmpfs of this size stops
# writes during the step; in every mode the parent checks after each step.
DEFAULT_WORKSPACE_MB = 256
# Files, directories and other entries in the workspace (inodes), enforced like the bytes. A task
# needs dozens; this stops a step that creates millions of empty files.
DEFAULT_WORKSPACE_INODES = 10_000
# Tasks (processes AND threads) of the sandbox's own uid (RLIMIT_NPROC). Room for the worker, a few
# library threads and a small subprocess pipeline; a fork bomb stops here.
DEFAULT_MAX_PROCESSES = 32
# Open file descriptors per process (RLIMIT_NOFILE).
DEFAULT_MAX_OPEN_FILES = 512
# Characters of printed output kept per step; the rest is counted and dropped. Observations longer
# than this only burn the controller's context.
DEFAULT_MAX_OUTPUT_CHARS = 20_000
# Tool calls per step: a loop calling tools forever is stopped here rather than by the wall clock,
# which does not run while the parent serves tools.
DEFAULT_MAX_TOOL_CALLS = 64
# Size of the sandbox's private /tmp (and /dev/shm): tmpfs lives in RAM, so keep it small.
DEFAULT_TMP_MB = 64
# Seconds to wait for a new worker to report ready (Python start plus mounts; ~50 ms normally).
DEFAULT_START_TIMEOUT_S = 30.0

# Values of StepResult.limit_hit.
LIMIT_NAMES = ("wall_time", "cpu_time", "memory", "file_size", "workspace", "tool_calls")


@dataclass(frozen=True)
class Limits:
    """Per-sandbox limits. Every field is enforced by the kernel or checked by the parent."""

    wall_s: float = DEFAULT_WALL_S
    cpu_s: float = DEFAULT_CPU_S
    worker_cpu_s: float = DEFAULT_WORKER_CPU_S
    memory_mb: int = DEFAULT_MEMORY_MB
    file_size_mb: int = DEFAULT_FILE_SIZE_MB
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    workspace_inodes: int = DEFAULT_WORKSPACE_INODES
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_open_files: int = DEFAULT_MAX_OPEN_FILES
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS
    tmp_mb: int = DEFAULT_TMP_MB
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "worker_cpu_s", "start_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"Limits.{name} must be > 0, got {getattr(self, name)}: pass a positive number of seconds.")
        for name in ("file_size_mb", "workspace_mb", "max_output_chars", "tmp_mb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Limits.{name} must be >= 1, got {getattr(self, name)}.")
        if self.workspace_inodes < 16:
            raise ConfigError(f"Limits.workspace_inodes={self.workspace_inodes} is too small for a task's files: use >= 16.")
        if self.memory_mb < 128:
            raise ConfigError(f"Limits.memory_mb={self.memory_mb} is too small for Python to start: use >= 128.")
        if self.max_processes < 4:
            raise ConfigError(f"Limits.max_processes={self.max_processes} leaves no room for the worker: use >= 4.")
        if self.max_open_files < 32:
            raise ConfigError(f"Limits.max_open_files={self.max_open_files} is too small for Python: use >= 32.")
        if self.max_tool_calls < 0:
            raise ConfigError(f"Limits.max_tool_calls must be >= 0, got {self.max_tool_calls}.")
        if self.worker_cpu_s < self.cpu_s:
            raise ConfigError(f"Limits.worker_cpu_s ({self.worker_cpu_s}) must be >= cpu_s ({self.cpu_s}).")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: float | int) -> Limits:
        """Limits from the sandbox fields of Settings (step_timeout_s, sandbox_memory_mb)."""
        values: dict[str, float | int] = {"wall_s": settings.step_timeout_s, "memory_mb": settings.sandbox_memory_mb}
        values["cpu_s"] = max(DEFAULT_CPU_S, 2 * settings.step_timeout_s)
        values["worker_cpu_s"] = max(DEFAULT_WORKER_CPU_S, float(values["cpu_s"]))
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MIB

    @property
    def file_size_bytes(self) -> int:
        return self.file_size_mb * MIB

    @property
    def workspace_bytes(self) -> int:
        return self.workspace_mb * MIB

    @property
    def tmp_bytes(self) -> int:
        return self.tmp_mb * MIB
