"""Task-level scheduling for `mmat synth`: the stages of every seed interleave on one pool of LM slots.

A seed is split into **units**: its query generation + dedup (``plan``), then one unit per task (files and
query-file verification, ``prepare_task``), then one per trajectory attempt of a verified task (the agent
and the trajectory verifier, ``attempt``). A unit is submitted as soon as the unit it depends on is done,
to a pool of threads larger than the LM concurrency. Every LM request of every thread takes a slot of
the run's :class:`mmat.lm_gate.LMGate` (``concurrency`` slots, adaptive under 429/503), so a free slot
goes to whichever unit is ready next while other threads run sandboxes and embeddings: threads blocked
on the LM cost nothing, and no sandbox or embedding work ever holds an LM slot.

Order: units are taken oldest seed first (then task, then attempt), so a run finishes its early seeds
before it opens many new ones and the tail stays short; a slow task holds one thread, never the others.

The scheduler never writes: when all units of a seed are done, the seed's assembled ``SeedResult`` is
handed to the runner (``outcomes``), whose thread is the single writer. A unit that raises ends its seed:
the outcome carries the exception (the runner classifies it: failed seed, or fatal), and the seed's
other units are dropped. After :meth:`SeedScheduler.stop` (Ctrl-C, a budget, a fatal error) no unit
starts; units in flight run until they end or their next LM call is refused by the closed gate.
Seeds that were not complete are never reported, so they are redone on rerun.

Contextvars (the LM-call attribution, ``fresh_replies``, DSPy's context) do not cross into pool threads:
each unit runs in a copy of the context the scheduler was created in, with its seed's values set again.
"""

from __future__ import annotations

import contextvars
import itertools
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["UnitPool", "SeedScheduler", "SeedOutcome", "EmbedBatcher", "unit_threads", "budget_error"]


def unit_threads(concurrency: int) -> int:
    """Threads for ``concurrency`` LM slots: every slot busy, plus half as many again for the units that are
    running a sandbox step or an embedding between two LM calls (on 2 cores more only adds processes).
    Concurrency 1 gets one thread: units run strictly one after another, oldest seed first."""
    return max(1, concurrency + concurrency // 2)


def budget_error(exc: BaseException) -> Any:
    """The BudgetExhausted behind ``exc`` (litellm and DSPy may wrap it), or None."""
    from mmat.lm_gate import BudgetExhausted

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BudgetExhausted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclass(order=True)
class _Item:
    priority: tuple
    seq: int
    fn: Callable[[], None] | None = field(compare=False)


class UnitPool:
    """Daemon threads taking callables lowest priority first; ``stop()`` drops what has not started.

    Why not ThreadPoolExecutor: it runs work first-in first-out, and units must be taken oldest seed
    first however late they were submitted."""

    def __init__(self, threads: int, name: str = "unit"):
        if threads < 1:
            raise ValueError(f"a unit pool needs at least one thread, got {threads}")
        self._queue: queue.PriorityQueue[_Item] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def submit(self, priority: tuple, fn: Callable[[], None]) -> bool:
        """Queue ``fn``; False (and nothing queued) once the pool is stopped."""
        with self._lock:
            if self._stopped:
                return False
            self._queue.put(_Item(priority, next(self._seq), fn))
        return True

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item.fn is None:
                return
            with self._lock:
                if self._stopped:
                    continue
                self._running += 1
            try:
                item.fn()
            finally:
                with self._lock:
                    self._running -= 1
                    self._idle.notify_all()

    def stop(self) -> None:
        """No unit starts after this; queued ones are dropped; each thread ends after its current unit."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for _ in self._threads:
            self._queue.put(_Item((float("inf"),), next(self._seq), None))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no unit is running (True) or ``timeout`` passed (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


@dataclass
class SeedOutcome:
    """A seed that ended: its assembled result, or the exception that ended it. ``abandoned``: it ended because
    the run is stopping (budget, Ctrl-C): nothing of it is written and it is redone on rerun. ``failure``: the
    error already classified (a worker process sends that instead of the exception)."""

    seed: Any
    result: Any = None
    error: BaseException | None = None
    abandoned: bool = False
    failure: Any = None


@dataclass
class _Job:
    seed: Any
    order: int
    workspace: Path
    redo: int
    result: Any = None
    tasks: dict[int, Any] = field(default_factory=dict)
    outstanding: int = 0
    ended: bool = False


class SeedScheduler:
    """Run seeds of a Synthesis ``program`` as units on a :class:`UnitPool`; finished seeds land in ``outcomes``.

    ``recorder`` is the DSPy callback recording LM calls (set in every unit). The runner reads ``outcomes``
    from its own thread and is the only one that writes."""

    def __init__(self, program: Any, recorder: Any, *, threads: int, tools: list[str] | None = None):
        self.program = program
        self.recorder = recorder
        self.tools = tools
        self.outcomes: queue.Queue[SeedOutcome] = queue.Queue()
        self.pool = UnitPool(threads, name="synth")
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # --- the runner's side -----------------------------------------------------------------------
    def submit(self, seed: Any, workspace: Path, *, order: int, redo: int = 0) -> None:
        """Schedule ``seed`` (its workspace is cleared when its first unit starts). ``order``: lower runs first."""
        job = _Job(seed=seed, order=order, workspace=Path(workspace), redo=redo, outstanding=1)
        self.pool.submit((order, -1, 0), lambda: self._run(job, self._plan))

    def stop(self) -> None:
        """Start no unit from now on; seeds not complete are never reported."""
        self._stopping.set()
        self.pool.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- units ----------------------------------------------------------------------------------
    def _tools(self, job: _Job) -> list[str]:
        return self.tools or self.program.tools or job.seed.tools

    def _plan(self, job: _Job) -> None:
        shutil.rmtree(job.workspace, ignore_errors=True)  # a redo starts clean
        job.result, specs = self.program.plan(job.seed)
        for index, spec in specs:
            self._spawn(job, (job.order, index, 0), self._prepare, index, spec)

    def _prepare(self, job: _Job, index: int, spec: Any) -> None:
        task = self.program.prepare_task(index, spec, self._tools(job), job.workspace / f"task_{index}")
        with self._lock:
            job.tasks[index] = task
        if self.program.needs_solving(task):
            for attempt in range(self.program.k):
                self._spawn(job, (job.order, index, 1 + attempt), self._attempt, task, attempt)

    def _attempt(self, job: _Job, task: Any, attempt: int) -> None:
        run = self.program.attempt(task, attempt, self._tools(job), task.workspace)
        with self._lock:
            task.trajectories.append(run)

    # --- bookkeeping ----------------------------------------------------------------------------
    def _spawn(self, job: _Job, priority: tuple, unit: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if job.ended:
                return
            job.outstanding += 1
        if not self.pool.submit(priority, lambda: self._run(job, unit, *args)):
            with self._lock:
                job.ended = True  # the pool is stopped: the seed can never complete, and is never reported

    def _run(self, job: _Job, unit: Callable[..., None], *args: Any) -> None:
        if job.ended or self._stopping.is_set():
            return  # the seed already failed, or the run is stopping: it stays unfinished
        try:
            self._context.copy().run(self._in_context, job, unit, *args)
        except BaseException as e:  # noqa: BLE001 -- the runner classifies it (a bug is re-raised there)
            self._end(job, SeedOutcome(job.seed, error=e,
                                       abandoned=self._stopping.is_set() or budget_error(e) is not None))
            return
        with self._lock:
            job.outstanding -= 1
            complete = job.outstanding == 0 and not job.ended
        if complete:
            self._end(job, SeedOutcome(job.seed, result=self._assemble(job)))

    def _in_context(self, job: _Job, unit: Callable[..., None], *args: Any) -> None:
        import dspy

        from mmat.lm import fresh_replies
        from mmat.store.context import attributed

        with dspy.context(callbacks=[self.recorder]), fresh_replies(job.redo), attributed(seed_idx=job.seed.index):
            unit(job, *args)

    def _assemble(self, job: _Job) -> Any:
        result = job.result
        if result.error is None:
            for index in sorted(job.tasks):
                task = job.tasks[index]
                if self.program.needs_solving(task):
                    self.program.settle(task)
                result.tasks.append(task)
        return result

    def _end(self, job: _Job, outcome: SeedOutcome) -> None:
        with self._lock:
            if job.ended:
                return
            job.ended = True
        self.outcomes.put(outcome)


@dataclass
class _EmbedRequest:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    vectors: Any = None
    error: BaseException | None = None


class EmbedBatcher:
    """An embedder for many threads: what they ask for within ``window_s`` is embedded in one call.

    Each seed's dedup and each pool image search embeds a few short texts; one MiniLM forward pass per
    request costs about as much as one for a few dozen, so concurrent requests are collected — the first
    caller waits ``window_s``, takes everything queued by then and embeds it — and each caller gets its own
    rows back. Rows are unit vectors computed exactly as ``Embedder.embed`` computes them."""

    def __init__(self, embedder: Any = None, *, window_s: float = 0.005):
        self._embedder = embedder
        self.window_s = window_s
        self._lock = threading.Lock()
        self._run = threading.Lock()  # one batch embeds at a time; the next one collects meanwhile
        self._queue: list[_EmbedRequest] = []
        self._collecting = False
        self.batches = 0  # embed calls made (for tests and the bench)

    def __deepcopy__(self, memo: dict) -> EmbedBatcher:
        return self  # shared, like the model it wraps

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from mmat.embed import Embedder

            self._embedder = Embedder.shared()
        return self._embedder

    def embed(self, texts: Any) -> Any:
        import numpy as np

        request = _EmbedRequest(list(texts))
        if not request.texts:
            return self.embedder.embed([])
        with self._lock:
            self._queue.append(request)
            lead = not self._collecting
            self._collecting = True
        if lead:
            self._embed_batch()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return np.asarray(request.vectors)

    def _embed_batch(self) -> None:
        with self._run:
            time.sleep(self.window_s)
            with self._lock:
                batch, self._queue, self._collecting = self._queue, [], False
            try:
                vectors = self.embedder.embed([t for r in batch for t in r.texts])
            except BaseException as e:  # noqa: BLE001 -- every waiting caller raises it
                for r in batch:
                    r.error = e
                    r.done.set()
                return
            self.batches += 1
            start = 0
            for r in batch:
                r.vectors, start = vectors[start:start + len(r.texts)], start + len(r.texts)
                r.done.set()
