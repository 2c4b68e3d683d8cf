"""Rows of the ``runs`` table: what was started, with which settings, and how it ended.

A run written with a ``run_id`` that already exists is a resume: it is marked running again and keeps
its original start time. Resumable commands pass :func:`resumable_run_id`, a content hash of what
they were asked to do, so running the same command again continues the same run.
Timestamps are naive UTC.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Union

import mmat
from mmat.config import Settings
from mmat.errors import StoreError
from mmat.ids import content_id

if TYPE_CHECKING:
    from mmat.store.db import Store

__all__ = ["RUN_STATUSES", "FINAL_STATUSES", "resumable_run_id", "settings_record", "start_run", "finish_run", "utcnow",
           "RunHandle", "run_lifecycle", "one_line_reason"]

RUN_STATUSES = ("running", "done", "failed", "interrupted")
FINAL_STATUSES = ("done", "failed", "interrupted")
# Credential-looking keys: api_key, openai_api_key, hf_token, client_secret... (not max_tokens).
log = logging.getLogger(__name__)
_SECRET_KEY = re.compile(r"^(.*[_-])?(api[_-]?key|token|secret|password|passwd|authorization|credentials?)$", re.IGNORECASE)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def settings_record(settings: Settings | dict[str, Any]) -> dict[str, Any]:
    """JSON-able settings with anything that looks like a credential removed (keys never reach the store)."""
    record = settings.to_record() if isinstance(settings, Settings) else dict(settings)
    return _redact(record)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items() if not (isinstance(k, str) and _SECRET_KEY.match(k))}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def resumable_run_id(kind: str, settings: Settings | dict[str, Any], command: str) -> str:
    """The same kind, settings and command always give the same run_id (so a rerun resumes)."""
    return content_id("run", kind, settings_record(settings), command)


def start_run(
    store: Store, kind: str, settings: Settings | dict[str, Any], command: str, run_id: str | None = None
) -> str:
    record = settings_record(settings)
    if run_id is None:
        run_id = content_id("run", kind, record, command, utcnow().isoformat())
    previous = store.sql("SELECT started_at FROM runs WHERE run_id = ?", [run_id])
    row = {
        "run_id": run_id,
        "kind": kind,
        "command": command,
        "settings": record,
        "status": "running",
        "summary": None,
        "mmat_version": mmat.__version__,
        "started_at": previous[0]["started_at"] if previous else utcnow(),
        "finished_at": None,
    }
    store.writer.put("runs", [row])
    store.writer.flush()
    return run_id


def finish_run(store: Store, run_id: str, status: str, summary: dict[str, Any], *,
               settings_update: dict[str, Any] | None = None) -> None:
    """Record how a run ended; ``settings_update`` adds what the run made to its settings (a compiled file)."""
    if status not in FINAL_STATUSES:
        raise StoreError(f"run status {status!r} is not a final status: use one of {', '.join(FINAL_STATUSES)}")
    found = store.sql("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not found:
        raise StoreError(f"run {run_id} is not in the store: start it with store.start_run first")
    row = found[0]
    row["settings"] = json.loads(row["settings"]) if row["settings"] is not None else None
    if settings_update:
        row["settings"] = {**(row["settings"] or {}), **settings_record(settings_update)}
    row.update(status=status, summary=summary, finished_at=utcnow())
    store.writer.put("runs", [row])
    store.writer.flush()


def one_line_reason(error: BaseException) -> str:
    """``Type: first line of the message`` — what a failed run's summary says about why."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__


@dataclass
class RunHandle:
    """What a command fills in while it runs: its summary, and a final status other than done if it wants."""

    run_id: str
    summary: dict[str, Any] = field(default_factory=dict)
    status: str = "done"


StoreSource = Union["Store", Callable[[], AbstractContextManager["Store"]]]


def _with_store(source: StoreSource, fn: Callable[["Store"], Any]) -> Any:
    if callable(source) and not hasattr(source, "writer"):  # an opener: hold the store only for this write
        with source() as store:
            return fn(store)
    return fn(source)


@contextmanager
def run_lifecycle(source: StoreSource, kind: str, settings: Settings | dict[str, Any], command: str, *,
                  run_id: str | None = None) -> Iterator[RunHandle]:
    """The one run lifecycle every command uses: a ``runs`` row while it runs, and how it ended — always.

    ``source`` is an open Store (commands that hold the store, like synth) or a function opening one
    (commands that must not hold the write lock while they work, like finetune: it is opened briefly at
    start and at the end). On success the row gets ``handle.status`` (done unless the command set another)
    and ``handle.summary``; on an exception it gets ``failed`` with the exception's one-line reason, and on
    Ctrl-C ``interrupted``; the exception is re-raised either way. A resumable command passes its
    ``resumable_run_id`` so a rerun continues the same row.
    """
    rid = _with_store(source, lambda st: start_run(st, kind, settings, command, run_id))
    handle = RunHandle(rid)
    try:
        yield handle
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        summary = {**handle.summary, "error": one_line_reason(e)}
        try:
            _with_store(source, lambda st: finish_run(st, rid, status, summary))
        except Exception as bookkeeping:  # noqa: BLE001 - the original error is the one to raise
            log.warning("run %s ended %s (%s) but that could not be recorded: %s", rid, status, summary["error"],
                        one_line_reason(bookkeeping))
        raise
    _with_store(source, lambda st: finish_run(st, rid, handle.status, handle.summary))
