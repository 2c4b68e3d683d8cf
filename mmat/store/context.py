"""Which task the current code is working on, for records made deep inside DSPy (LM calls).

A contextvar, so each thread and asyncio task has its own value. Threads started with a plain
``ThreadPoolExecutor`` do not inherit it: enter :func:`recording_task` inside the worker, or submit
``contextvars.copy_context().run``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_task_id", "recording_task"]

current_task_id: ContextVar[str | None] = ContextVar("mmat_current_task_id", default=None)


@contextmanager
def recording_task(task_id: str | None) -> Iterator[None]:
    """Attribute every LM call recorded inside the block to ``task_id``."""
    token = current_task_id.set(task_id)
    try:
        yield
    finally:
        current_task_id.reset(token)
