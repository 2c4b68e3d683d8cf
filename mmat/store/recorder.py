"""Record every DSPy LM call as a row of ``lm_calls``: a DSPy callback, no patching of DSPy.

Register it for a whole run with ``dspy.configure(callbacks=[LMCallRecorder(store, run_id)])`` or for
a block with ``dspy.context(callbacks=[...])``. Each call is attributed to the seed, task, trajectory
and step the code around it declared with :func:`mmat.store.context.attributed` (Synthesis and
CodeAgent do; ``with recording_task(task_id): ...`` for a plain block).

How each fact is found in dspy 3.4.1 (read from ``dspy/clients/execution.py``):

- **module** -- ``Module.__call__`` keeps the stack of running modules in ``settings.caller_modules``,
  a contextvar, so it is right per thread and per asyncio task. The recorder names the innermost
  module that is not one of DSPy's own building blocks (``Predict``, ``ChainOfThought``...), i.e. the
  program step (``QueryGenerator``); a module's ``_mmat_name`` or string ``name`` attribute wins. With
  only built-ins running, the innermost built-in's class name is used.
- **cache hits** -- a cache hit reports *empty* usage, indistinguishable from a provider that reports
  none. But ``finalize()`` hands usage to ``settings.usage_tracker`` exactly when the result was not a
  cache hit. For the duration of each call the recorder installs its own tracker (forwarding to any
  tracker already there, so ``dspy.track_usage`` keeps working): a call that succeeds without reaching
  it was served from the cache, and is recorded with cache_hit=True, 0 tokens and 0 cost.
- **usage and cost** -- ``record_history`` appends the call's history entry to every module in
  ``settings.caller_modules``; the recorder adds a private sink there for the call, so it gets exactly
  this call's entry (``lm.history[-1]`` may belong to another thread). With history disabled
  (``dspy.configure(disable_history=True)``) cost is NULL; tokens still come from the tracker.
- **errors** -- the exception the LM raised, as ``Type: message`` (first 2000 characters); a reply that
  arrived but could not be parsed is marked afterwards (``note_unparsable``, called by the programs).

Request kwargs (temperature, response_format...) are not stored, so no ``api_key`` can leak through
them; image data URLs in messages are replaced by their size and sha256 (the images are blobs).
Rows go through the store's single writer; a write error surfaces on the pipeline's next flush.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.dsp.utils.settings import settings
from dspy.utils.callback import BaseCallback

from mmat.errors import StoreError
from mmat.store.context import Attribution, current_attribution
from mmat.store.runs import utcnow

__all__ = ["LMCallRecorder", "RowSink", "module_name", "note_unparsable"]

log = logging.getLogger(__name__)

ERROR_CHARS = 2000
DATA_URL_KEEP = 256  # data URLs longer than this are replaced by a digest


class _CallUsage:
    """A usage tracker for one call: notes that DSPy reported usage (i.e. no cache hit), forwards it."""

    def __init__(self, parent: Any):
        self.parent = parent
        self.reported = False
        self.usage: dict[str, Any] = {}

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        self.reported = True
        for key, value in (usage_entry or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.usage[key] = self.usage.get(key, 0) + value
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)


class _HistorySink:
    """Stands in the caller-module stack during one call to receive that call's history entry."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []


@dataclass
class _Pending:
    context: Any
    tracker: _CallUsage
    sink: _HistorySink
    module: str | None
    model: str | None
    attribution: Attribution
    messages: Any
    started_at: Any
    t0: float = field(default_factory=time.perf_counter)
    depth: int = 1


class RowSink:
    """Stands in for the store where there is none, in a worker process or on a Ray actor: each batch of
    rows the recorder writes goes to ``send(table, rows)`` (kept, or sent on to the driver's writer)."""

    closed = False  # the recorder asks the store's writer this before writing

    def __init__(self, send: Callable[[str, list[dict[str, Any]]], None]):
        self._send = send
        self.writer = self

    def put(self, table: str, rows: list[dict[str, Any]], **_: Any) -> None:
        self._send(table, rows)


class LMCallRecorder(BaseCallback):
    """A DSPy callback that writes one ``lm_calls`` row per LM call of ``run_id``."""

    def __init__(self, store: Any, run_id: str | None):
        self.store = store
        self.run_id = run_id
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._last = threading.local()  # the row this thread recorded last (see mark_unparsable)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            if call_id in self._pending:  # registered twice (globally and on the LM): record once
                self._pending[call_id].depth += 1
                return
        modules = list(settings.caller_modules or [])
        tracker, sink = _CallUsage(settings.usage_tracker), _HistorySink()
        context = dspy.context(usage_tracker=tracker, caller_modules=[*modules, sink])
        context.__enter__()
        pending = _Pending(
            context=context,
            tracker=tracker,
            sink=sink,
            module=module_name(modules),
            model=getattr(instance, "model", None),
            attribution=current_attribution.get(),
            messages=_request_messages(inputs),
            started_at=utcnow(),
        )
        with self._lock:
            self._pending[call_id] = pending

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        with self._lock:
            pending = self._pending.get(call_id)
            if pending is None:
                return
            if pending.depth > 1:
                pending.depth -= 1
                return
            del self._pending[call_id]
        try:
            pending.context.__exit__(None, None, None)
        except ValueError as e:  # entered in another contextvars.Context: DSPy restores its own on exit
            log.warning("LMCallRecorder could not restore the DSPy context for call %s: %s", call_id, e)
        row = self._row(call_id, pending, outputs, exception)
        self._last.row = row
        self._put(row)

    def _put(self, row: dict[str, Any]) -> None:
        if self.store.writer.closed:  # a call abandoned by a stopped run returns after the store closed
            return
        try:
            self.store.writer.put("lm_calls", [row], surface_errors=False)
        except StoreError as e:  # closed between the check and the put: the run is over, nothing to keep
            log.debug("lm_calls row %s not stored: %s", row["call_id"], e)

    def mark_unparsable(self, reason: str) -> None:
        """Give this thread's last recorded call the error of a reply the program could not read (the call
        itself succeeded, so on_lm_end saw no exception)."""
        row = getattr(self._last, "row", None)
        if row is None or row["error"] is not None:
            return
        self._last.row = row = {**row, "error": _error_text(_Unparsable(reason))}
        self._put(row)


    def _row(self, call_id: str, p: _Pending, outputs: Any, exception: BaseException | None) -> dict[str, Any]:
        latency_ms = (time.perf_counter() - p.t0) * 1000.0
        cache_hit = exception is None and not p.tracker.reported
        entry = p.sink.history[-1] if p.sink.history else {}
        usage = p.tracker.usage or {
            k: v for k, v in (entry.get("usage") or {}).items() if isinstance(v, (int, float))
        }
        if cache_hit:
            prompt_tokens, completion_tokens, cost = 0, 0, 0.0
        else:
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
            cost = entry.get("cost")
        task_id, traj_id = p.attribution.resolve(self.run_id)
        return {
            "call_id": call_id,
            "run_id": self.run_id,
            "module": p.module,
            "model": p.model,
            "prompt_tokens": _int_or_none(prompt_tokens),
            "completion_tokens": _int_or_none(completion_tokens),
            "cost": float(cost) if isinstance(cost, (int, float)) else None,
            "latency_ms": latency_ms,
            "cache_hit": cache_hit,
            "error": _error_text(exception),
            "task_id": task_id,
            "seed_idx": p.attribution.seed_idx,
            # made for the whole seed (query generation): the seed's first task takes it when the seed is
            # written (mmat.store.rows.attribute_seed_calls); task_costs shares it over the seed's tasks
            "seed_call": task_id is None and p.attribution.seed_idx is not None,
            "traj_id": traj_id,
            "step_idx": p.attribution.step_idx,
            "messages": p.messages,
            "outputs": _plain(outputs) if exception is None else None,
            "started_at": p.started_at,
        }


def module_name(modules: list[Any]) -> str | None:
    """Name of the innermost program step among running modules (see the module docstring)."""
    for module in reversed(modules):
        explicit = getattr(module, "_mmat_name", None) or getattr(module, "name", None)
        if isinstance(explicit, str) and explicit:
            return explicit
        if not type(module).__module__.startswith("dspy."):
            return type(module).__name__
    return type(modules[-1]).__name__ if modules else None


def _request_messages(inputs: dict[str, Any]) -> Any:
    messages = inputs.get("messages")
    if messages is None:
        prompt = inputs.get("prompt")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return _plain(messages)


def _plain(value: Any) -> Any:
    """A JSON-able copy (unknown objects become their string form), with data URLs digested."""
    try:
        plain = json.loads(json.dumps(value, default=_fallback, allow_nan=False))
    except ValueError:  # NaN/inf somewhere: keep the text form rather than lose the record
        plain = str(value)
    return _shrink_data_urls(plain)


def _fallback(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return dict(value)
    return str(value)


def _shrink_data_urls(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > DATA_URL_KEEP:
            head = value.split(",", 1)[0]
            digest = hashlib.sha256(value.encode()).hexdigest()
            return f"{head},<{len(value)} chars sha256={digest}>"
        return value
    if isinstance(value, list):
        return [_shrink_data_urls(v) for v in value]
    if isinstance(value, dict):
        return {k: _shrink_data_urls(v) for k, v in value.items()}
    return value


def _error_text(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    text = f"{type(exception).__name__}: {exception}"
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _Unparsable(Exception):
    """Names the error of a reply that arrived but did not fit the requested fields."""


def note_unparsable(reason: str) -> None:
    """Tell the recorders of the running DSPy context that the last call's reply could not be read."""
    for callback in settings.callbacks or []:
        if isinstance(callback, LMCallRecorder):
            callback.mark_unparsable(reason)
