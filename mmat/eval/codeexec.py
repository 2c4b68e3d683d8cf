"""CodeExec: the share of the agent's code steps that ran without an error.

Per item: (code steps - code steps that raised) / code steps; an item with no code step has no CodeExec
(None) and is left out of the run's figure. Per run: the mean over items that have one (macro average), so
one long, failing trajectory does not outweigh many short ones.
"""

from __future__ import annotations

__all__ = ["code_exec"]


def code_exec(n_code_steps: int, n_code_errors: int) -> float | None:
    """Share of code steps without an error, or None when no code step ran."""
    if n_code_steps < 0 or n_code_errors < 0 or n_code_errors > n_code_steps:
        raise ValueError(f"bad step counts: {n_code_errors} errors in {n_code_steps} code steps")
    if n_code_steps == 0:
        return None
    return (n_code_steps - n_code_errors) / n_code_steps
