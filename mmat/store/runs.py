"""Rows of the ``runs`` table: what was started, with which settings, and how it ended.

A run written with a ``run_id`` that already exists is a resume: it is marked running again and keeps
its original start time. Resumable commands pass :func:`resumable_run_id`, a content hash of what
they were asked to do, so running the same command again continues the same run.
Timestamps are naive UTC.

Every command that writes runs inside :func:`run_lifecycle`, which always records how the run ended
(and keeps its resume markers, :meth:`RunHandle.mark_unit`):
``done`` (or the status the command set), ``failed`` with the exception's one-line reason (SIGTERM
included), ``interrupted`` on Ctrl-C. A process killed outright (SIGKILL, out of memory) cannot write
anything: its row names its owner (``runs.owner`` = host, pid and the process's start time), so the
next run started on the store marks it ``failed`` (:func:`mark_abandoned_runs`) and ``mmat runs``
shows it failed already before that (:func:`list_runs`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Union

import pyarrow as pa

import mmat
from mmat.config import Settings
from mmat.errors import StoreError
from mmat.ids import content_id

if TYPE_CHECKING:
    from mmat.store.db import Store

__all__ = ["RUN_STATUSES", "FINAL_STATUSES", "resumable_run_id", "settings_record", "start_run", "finish_run", "utcnow",
           "RunHandle", "run_lifecycle", "one_line_reason", "RunTerminated", "mark_abandoned_runs", "list_runs",
           "process_owner", "owner_alive", "RESUME_MARKERS"]

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
    mark_abandoned_runs(store)
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
        "owner": process_owner(),
    }
    store.writer.put("runs", [row])
    store.writer.flush()
    with _active_lock:
        _active.add(run_id)
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
    with _active_lock:
        _active.discard(run_id)


# --- who owns a running row, and rows whose owner is gone -------------------------------------------
_active: set[str] = set()  # run_ids this process started and has not finished
_active_lock = threading.Lock()


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), telling a reused pid from the owner."""
    try:
        stat = open(f"/proc/{pid}/stat", encoding="ascii", errors="replace").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[19] if fields[0] != "Z" else "zombie"  # field 22 of stat(5); a zombie has ended


def process_owner(pid: int | None = None) -> str:
    """``host pid start`` of this process (or ``pid``): what a ``runs`` row records about who runs it."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()} {pid} {_start_ticks(pid) or '-'}"


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process named by ``owner`` still runs: None when it cannot be told (another host, no owner)."""
    parts = (owner or "").split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    pid, start = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    ticks = _start_ticks(pid)
    if ticks == "zombie":
        return False
    return start == "-" or ticks is None or ticks == start


def _abandoned(row: dict[str, Any]) -> bool:
    if row["owner"] == process_owner():  # this process: abandoned unless it still runs the row
        with _active_lock:
            return row["run_id"] not in _active
    return owner_alive(row["owner"]) is False


def _abandoned_reason(owner: str) -> str:
    host, pid = (owner.split() + ["?", "?"])[:2]
    return (f"abandoned: process {pid} on {host} ended without recording how the run ended (killed, e.g. SIGKILL "
            "or out of memory); rerun the same command to resume")


def mark_abandoned_runs(store: Store) -> list[str]:
    """Mark ``failed`` every ``running`` row whose owner process is gone; returns their run_ids."""
    marked = []
    for row in store.sql("SELECT run_id, owner, summary FROM runs WHERE status = 'running' AND owner IS NOT NULL"):
        if _abandoned(row):
            summary = json.loads(row["summary"]) if row["summary"] else {}
            finish_run(store, row["run_id"], "failed", {**summary, "error": _abandoned_reason(row["owner"])})
            marked.append(row["run_id"])
    return marked


def list_runs(rows: pa.Table) -> pa.Table:
    """``runs`` rows as ``mmat runs`` shows them: a ``running`` row whose owner is gone shows ``failed``
    (with why in its summary) before the next run marks it so in the store."""
    if "status" not in rows.column_names or "owner" not in rows.column_names:
        return rows
    status, summary = rows.column("status").to_pylist(), rows.column("summary").to_pylist() \
        if "summary" in rows.column_names else None
    owners = rows.column("owner").to_pylist()
    for i, (st, owner) in enumerate(zip(status, owners, strict=True)):
        if st == "running" and owner and owner != process_owner() and owner_alive(owner) is False:
            status[i] = "failed"
            if summary is not None:
                before = json.loads(summary[i]) if summary[i] else {}
                summary[i] = json.dumps({**before, "error": _abandoned_reason(owner)})
    rows = rows.set_column(rows.column_names.index("status"), "status", pa.array(status, pa.string()))
    if summary is not None:
        field = rows.schema.field("summary")
        rows = rows.set_column(rows.column_names.index("summary"), field, pa.array(summary, field.type))
    return rows


class RunTerminated(SystemExit):
    """SIGTERM arrived while a run ran: raised in the main thread so the lifecycle records ``failed``;
    the process then exits with 143 (128 + SIGTERM), as a terminated process does."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "terminated by SIGTERM"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise RunTerminated()


def _catch_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into RunTerminated for the block (main thread only); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def one_line_reason(error: BaseException) -> str:
    """``Type: first line of the message`` — what a failed run's summary says about why."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, RunTerminated):
        return "terminated by SIGTERM"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__


@dataclass
class RunHandle:
    """What a command fills in while it runs: its summary (kept on failure too, with the error added), a
    final status other than done if it wants, and what it made to add to the run's settings (a compiled
    file). ``progress`` is the run's one progress display."""

    run_id: str
    summary: dict[str, Any] = field(default_factory=dict)
    status: str = "done"
    settings_update: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = False
    store: Store | None = None  # the open store, for runs that hold it (resume markers need it)

    # --- resume markers: one row per finished unit (a synth seed, a prefs task), written after its rows ---
    def units(self, marker: str) -> dict[Any, dict[str, Any]]:
        """This run's marker rows in ``marker`` (``synth_seeds`` or ``prefs_tasks``), by unit key."""
        key = _marker_key(marker)
        rows = self._store().sql(f"SELECT * FROM {marker} WHERE run_id = ?", [self.run_id])
        return {r[key]: r for r in rows}

    def done_units(self, marker: str) -> set[Any]:
        """Keys of the units this run finished (status done): a rerun skips them."""
        return {k for k, r in self.units(marker).items() if r["status"] == "done"}

    def mark_unit(self, marker: str, key: Any, status: str, **fields: Any) -> None:
        """Record that unit ``key`` ended (``done`` or ``failed``); call it only once the unit's rows are written:
        the mark is flushed, so a kill after it never loses the unit and a kill before it redoes it."""
        if status not in ("done", "failed"):
            raise StoreError(f"a unit ends done or failed, not {status!r}")
        store = self._store()
        store.writer.put(marker, [{"run_id": self.run_id, _marker_key(marker): key, "status": status,
                                   "finished_at": utcnow(), **fields}])
        store.writer.flush()

    def _store(self) -> Store:
        if self.store is None:
            raise StoreError(f"run {self.run_id} was started without an open store: resume markers need one "
                             "(pass the Store to run_lifecycle)")
        return self.store

    def progress(self, label: str, total: int):
        """The run's progress bar (rich on stderr; nothing when the run was started with ``progress=False``)."""
        from mmat.store.progress import ProgressBar

        return ProgressBar(label, total, self.show_progress)


StoreSource = Union["Store", Callable[[], AbstractContextManager["Store"]]]

RESUME_MARKERS = {"synth_seeds": "seed_idx", "prefs_tasks": "task_id"}  # marker table -> its unit key


def _marker_key(marker: str) -> str:
    if marker not in RESUME_MARKERS:
        raise StoreError(f"{marker!r} is not a resume marker table: use one of {', '.join(RESUME_MARKERS)}")
    return RESUME_MARKERS[marker]


def _is_opener(source: StoreSource) -> bool:
    return callable(source) and not hasattr(source, "writer")


def _with_store(source: StoreSource, fn: Callable[["Store"], Any]) -> Any:
    if _is_opener(source):  # an opener: hold the store only for this write
        with source() as store:
            return fn(store)
    return fn(source)


@contextmanager
def run_lifecycle(source: StoreSource, kind: str, settings: Settings | dict[str, Any], command: str, *,
                  run_id: str | None = None, progress: bool = False) -> Iterator[RunHandle]:
    """The one run lifecycle every command uses: a ``runs`` row while it runs, and how it ended — always.

    ``source`` is an open Store (commands that hold the store, like synth) or a function opening one
    (commands that must not hold the write lock while they work, like finetune: it is opened briefly at
    start and at the end). On success the row gets ``handle.status`` (done unless the command set another)
    and ``handle.summary``; on an exception it gets ``failed`` with the exception's one-line reason (SIGTERM,
    turned into :class:`RunTerminated` while the block runs in the main thread, too), and on Ctrl-C
    ``interrupted``; the exception is re-raised either way. A resumable command passes its
    ``resumable_run_id`` so a rerun continues the same row. Starting a run first marks rows that killed
    processes left ``running`` as failed (:func:`mark_abandoned_runs`).
    """
    restore = _catch_sigterm()
    try:
        rid = _with_store(source, lambda st: start_run(st, kind, settings, command, run_id))
        handle = RunHandle(rid, show_progress=progress, store=None if _is_opener(source) else source)
        try:
            yield handle
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            summary = {**handle.summary, "error": one_line_reason(e)}
            try:
                _with_store(source, lambda st: finish_run(st, rid, status, summary, settings_update=handle.settings_update))
            except Exception as bookkeeping:  # noqa: BLE001 - the original error is the one to raise
                log.warning("run %s ended %s (%s) but that could not be recorded: %s", rid, status, summary["error"],
                            one_line_reason(bookkeeping))
            raise
        _with_store(source, lambda st: finish_run(st, rid, handle.status, handle.summary,
                                                  settings_update=handle.settings_update))
    finally:
        restore()
