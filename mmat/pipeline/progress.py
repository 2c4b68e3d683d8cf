"""Live LM figures for progress lines and run summaries (the bar itself is :mod:`mmat.store.progress`).

For runs that go through an LM gate (``mmat.lm_gate``) the line also shows the gate's live figures
(:func:`lm_line`): calls in flight / the current limit, calls/s, tokens/s and the cost so far; the run
summary keeps the gate's totals and its limit over time (:func:`stats_record`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mmat.store.progress import ProgressBar

__all__ = ["ProgressBar", "lm_line", "lm_summary_line", "stats_record", "LIMIT_HISTORY_KEPT"]

LIMIT_HISTORY_KEPT = 200  # (seconds, limit) points kept in a run's summary: the first ones and the latest


def _field(stats: Any, name: str, default: Any = 0) -> Any:
    if isinstance(stats, dict):
        return stats.get(name, default)
    return getattr(stats, name, default)


def lm_line(stats: Any) -> str:
    """``LM 12/32 in flight · 3.1 calls/s · 450 tok/s · $0.0123`` from a gate snapshot (or its record)."""
    line = (f"LM {_field(stats, 'in_flight')}/{_field(stats, 'limit')} in flight · "
            f"{_field(stats, 'calls_per_s', 0.0):.1f} calls/s · {_field(stats, 'tokens_per_s', 0.0):.0f} tok/s · "
            f"${_field(stats, 'cost', 0.0) or 0.0:.4f}")
    throttled = _field(stats, "throttled")
    return line + (f" · {throttled} throttled" if throttled else "")


def lm_summary_line(record: dict[str, Any]) -> str:
    """The summary's LM line: calls sent, throttles, tokens, cost, and how low the limit went."""
    history = record.get("limit_history") or []
    lowest = min((limit for _, limit in history), default=record.get("limit"))
    line = (f"LM: {record.get('calls', 0)} calls sent, {record.get('throttled', 0)} throttled, "
            f"{record.get('tokens', 0)} tokens, ${record.get('cost', 0.0) or 0.0:.4f}")
    if lowest is not None and record.get("concurrency") is not None and lowest < record["concurrency"]:
        line += f"; limit cut to {lowest} of {record['concurrency']} under throttling"
    return line


def stats_record(stats: Any) -> dict[str, Any]:
    """A gate snapshot as JSON-able summary data; a long limit history keeps its first and latest points."""
    if dataclasses.is_dataclass(stats):
        record = dataclasses.asdict(stats)
    elif hasattr(stats, "model_dump"):
        record = stats.model_dump(mode="json")
    else:
        record = dict(stats)
    history = [list(point) for point in record.get("limit_history") or []]
    if len(history) > LIMIT_HISTORY_KEPT:
        half = LIMIT_HISTORY_KEPT // 2
        history = history[:half] + history[-half:]
    record["limit_history"] = history
    return record
