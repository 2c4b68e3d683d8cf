"""mmat's exceptions, named by who must act.

Every message says how to fix the problem. The CLI turns these (and only these) into one clear line
and a non-zero exit; anything else is a bug in mmat and keeps its traceback.
"""

__all__ = [
    "MmatError", "ConfigError", "ModelUnavailableError", "ModelOutputError", "SandboxError", "StoreError",
    "StoreMigrationPendingError", "StoreLockedError",
]


class MmatError(Exception):
    """Root of every error mmat raises on purpose."""


class ConfigError(MmatError):
    """The user must change a setting, a flag, a file path or an environment variable."""


class ModelUnavailableError(ConfigError):
    """A model cannot be reached or loaded: unknown model string, missing key, dead api_base, bad weights."""


class ModelOutputError(MmatError):
    """A model answered, but not in the shape asked for. Recorded and counted; runs go on."""


class SandboxError(MmatError):
    """The sandbox could not be started or talked to (not: model code that failed inside it)."""


class StoreError(MmatError):
    """The DuckDB store cannot be opened or written: locked by another process, corrupt, wrong schema."""


class StoreMigrationPendingError(StoreError):
    """A read-only open found a store from an older mmat: a read-write open migrates it."""


class StoreLockedError(StoreError):
    """Another process holds the database file (``pid`` when DuckDB names it)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid
