"""What the current code is working on -- run, seed, task, trajectory, step -- for records made deep
inside DSPy (LM calls).

A contextvar holds one immutable :class:`Attribution`; :func:`attributed` narrows it for a block.
Programs and runners set what they know (Synthesis: seed and spec index, attempt and controller;
CodeAgent: the step index; a runner: an explicit task or trajectory id) and the LM-call recorder
resolves the ids with the same functions the rows are written with (:mod:`mmat.ids`).

Setting a level clears the levels below it unless they are given too: entering a new task forgets
the previous task's trajectory and step. Each thread and asyncio task has its own value; threads
started with a plain ``ThreadPoolExecutor`` do not inherit it (set it inside the worker).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from mmat.ids import task_id_for, traj_id_for

__all__ = ["Attribution", "attributed", "current_attribution", "recording_task"]


@dataclass(frozen=True)
class Attribution:
    seed_idx: int | None = None
    task_id: str | None = None  # explicit; else from (run, seed_idx, task_key)
    task_key: Any = None  # the spec's index within its seed
    traj_id: str | None = None  # explicit; else from (task, attempt, controller)
    attempt: int | None = None
    controller: str | None = None
    step_idx: int | None = None

    def resolve(self, run_id: str | None) -> tuple[str | None, str | None]:
        """(task_id, traj_id) as the rows of this run name them."""
        task_id = self.task_id
        if task_id is None and run_id is not None and self.seed_idx is not None and self.task_key is not None:
            task_id = task_id_for(run_id, self.seed_idx, self.task_key)
        traj_id = self.traj_id
        if traj_id is None and task_id is not None and self.attempt is not None and self.controller is not None:
            traj_id = traj_id_for(task_id, self.attempt, self.controller)
        return task_id, traj_id


_LEVELS = (("seed_idx",), ("task_id", "task_key"), ("traj_id", "attempt", "controller"), ("step_idx",))

current_attribution: ContextVar[Attribution] = ContextVar("mmat_attribution", default=Attribution())


@contextmanager
def attributed(**fields: Any) -> Iterator[Attribution]:
    """Attribute every LM call recorded inside the block to ``fields`` (see the module docstring)."""
    unknown = set(fields) - {f for level in _LEVELS for f in level}
    if unknown:
        raise TypeError(f"unknown attribution field(s): {', '.join(sorted(unknown))}")
    deepest = max(i for i, level in enumerate(_LEVELS) if set(level) & set(fields)) if fields else len(_LEVELS)
    cleared = {f: None for level in _LEVELS[deepest + 1:] for f in level if f not in fields}
    value = replace(current_attribution.get(), **cleared, **fields)
    token = current_attribution.set(value)
    try:
        yield value
    finally:
        current_attribution.reset(token)


@contextmanager
def recording_task(task_id: str | None) -> Iterator[None]:
    """Attribute every LM call recorded inside the block to ``task_id``."""
    with attributed(task_id=task_id):
        yield
