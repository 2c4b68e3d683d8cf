"""`mmat synth --executor process`: seeds run in worker processes on this machine; the driver keeps the
store and the run's LM gate.

Why: one Python process does all of mmat's own work (DSPy's prompt formatting and parsing, the HTTP
clients, the agents' sandbox round trips) under one GIL, so at short LM latencies, or with many slots, a
local run is bound by one core however many slots it has (bench/RESULTS.md). Worker processes spread
that work over the machine's cores while every LM request still takes a slot of the driver's one
:class:`mmat.lm_gate.LMGate`: the concurrency limit, AIMD under 429/503 and ``--max-calls``/``--max-cost``
hold for the run as a whole, exactly as with ``--executor local``.

- **Forked early.** Workers are forked at the start of the run, after mmat, DSPy and litellm are imported
  and before the driver opens its store, sends a request or starts a thread (a fork copies only the thread
  that calls it, so nothing is copied mid-lock). A worker is ready in milliseconds; ``spawn`` costs
  6-7 CPU-seconds of imports per worker on this machine.
- **Own program.** Each worker builds its own Synthesis program (its own sandboxes, model clients and
  embedder) from the run's settings and runs its seeds, assigned round-robin in seed order, on its own
  task-level :class:`mmat.pipeline.scheduler.SeedScheduler`.
- **One gate, one dedup index.** Workers reach the driver's gate and its query filter over a Unix socket
  in a private (0700) directory, with a random authkey (multiprocessing's HMAC handshake), one connection
  per thread: a thread waiting for a slot waits in the driver, in the gate's one FIFO queue. A worker
  embeds its queries itself and asks the driver only to decide, so two workers never both accept the same
  query.
- **Rows come home in order.** A worker sends its ``lm_calls`` rows and then its ended seeds over its pipe;
  the driver writes them through the store's single writer — the code path of the local executor, so
  resume after a SIGKILL and the row counts are exactly those of a local run.
- **Stopping.** Workers ignore Ctrl-C (the driver takes it and stops them) and die with the driver
  (PDEATHSIG); on close each worker takes its warm sandboxes down before it exits. A worker that dies on
  its own ends the run with an error naming it; what was complete is stored, a rerun does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import connection as mpc
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.lm_gate import BudgetExhausted, LMGate, Slot
from mmat.pipeline.scheduler import SeedOutcome, budget_error, unit_threads
from mmat.structured import resolved_models

__all__ = ["ProcessExecutor", "RemoteGate", "WorkerCrash", "default_workers"]

CLOSE_TIMEOUT_S = 30.0  # how long close() waits for a worker to take its sandboxes down and exit
START_TIMEOUT_S = 300.0  # how long start() waits for every worker to build its program
_PR_SET_PDEATHSIG = 1
log = logging.getLogger(__name__)


SLOTS_PER_WORKER = 8  # the default gives each worker at least this many of the run's LM slots


def default_workers(concurrency: int) -> int:
    """Two workers per CPU this process may use, but no more than one per SLOTS_PER_WORKER slots.

    Why more workers than cores: a worker's threads queue for its one GIL, and every LM request waits there
    to be sent and again to be read, while it holds a slot. At 32 slots / 1 s on 2 cores, 2 workers kept
    0.87 of the slots busy over a run, 4 kept 0.91 (bench/RESULTS.md), with less CPU per task."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2 * cpus, -(-concurrency // SLOTS_PER_WORKER)))


class WorkerCrash(RuntimeError):
    """A worker process failed outside any LM stage (a bug, or it died): the run stops with its words."""


# --- the driver's services, over a Unix socket ----------------------------------------------------------
RPC_DIR_PREFIX = "mmat-rpc-"
_SOCKET_NAME = "rpc"
_STALE_AFTER_S = 60.0  # a directory this young may be a live run's, between mkdtemp and bind


def _knock(address: str) -> None:
    """Connect to ``address`` and hang up at once, without a handshake; raises OSError (refused, missing,
    timed out). The server's accept thread takes it and its connection thread sees the peer gone."""
    with socket.socket(socket.AF_UNIX) as peer:
        peer.settimeout(1.0)
        peer.connect(address)


def _sweep_dead_sockets() -> None:
    """Remove this user's socket directories whose server is gone: a SIGKILLed driver cannot remove its own.
    Gone means the socket refuses a connection (nothing listens), or is missing from a directory older than
    a minute. A live server's socket accepts the knock."""
    root = Path(tempfile.gettempdir())
    for directory in root.glob(RPC_DIR_PREFIX + "*"):
        try:
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or time.time() - info.st_mtime < _STALE_AFTER_S:
                continue
            _knock(str(directory / _SOCKET_NAME))
        except (ConnectionRefusedError, FileNotFoundError):
            shutil.rmtree(directory, ignore_errors=True)
        except OSError:  # a busy or odd entry: leave it
            continue


class _RpcServer:
    """Serves ``methods`` to the workers: one thread per connection, so a call that blocks (a gate
    acquire) blocks only its caller. Written here rather than with multiprocessing's managers because
    those proxy objects (reference counting, a server process of their own); we need plain calls into
    objects living in this process."""

    def __init__(self, methods: dict[str, Callable[..., Any]]):
        _sweep_dead_sockets()
        self._dir = tempfile.mkdtemp(prefix=RPC_DIR_PREFIX)  # 0700: only this user reaches the socket
        self.address = os.path.join(self._dir, _SOCKET_NAME)
        self.authkey = secrets.token_bytes(32)
        self._methods = methods
        # No authkey here: Listener.accept() would run the handshake in the accept thread, where one peer
        # that connects and never answers holds up every later connection and close(). Each connection's
        # own thread runs it instead (_serve).
        self._listener = mpc.Listener(self.address, family="AF_UNIX")
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="mmat-rpc-accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: retry without spinning
                continue
            if self._closed:
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), name="mmat-rpc", daemon=True).start()

    def _serve(self, conn: mpc.Connection) -> None:
        with conn:
            try:  # multiprocessing's HMAC handshake, both ways, as Listener(authkey=...) runs it
                mpc.deliver_challenge(conn, self.authkey)
                mpc.answer_challenge(conn, self.authkey)
            except (OSError, EOFError, mpc.AuthenticationError):
                return
            while True:
                try:
                    name, args = conn.recv()
                except (EOFError, OSError):
                    return
                try:
                    reply = (True, self._methods[name](*args))
                except Exception as e:  # noqa: BLE001 -- raised again in the worker that called
                    reply = (False, e)
                try:
                    conn.send(reply)
                except OSError:  # the worker is gone
                    return
                except Exception:  # noqa: BLE001 -- an exception that does not pickle: its words do
                    try:
                        conn.send((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
                    except OSError:
                        return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wake the accept thread with a bare connection. Not with a Client: that waits for a challenge, and
        # none comes once the accept thread has seen _closed and returned (CI hung here, at 95%).
        with contextlib.suppress(OSError):
            _knock(self.address)
        self._thread.join(5)
        self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class _RpcClient:
    """A worker's line to the driver: one connection per thread."""

    def __init__(self, address: str, authkey: bytes):
        self._address, self._authkey = address, authkey
        self._local = threading.local()

    def call(self, name: str, *args: Any) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = mpc.Client(self._address, family="AF_UNIX", authkey=self._authkey)
        try:
            conn.send((name, args))
            ok, value = conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerCrash(f"the synth driver is gone ({type(e).__name__}); this worker stops") from None
        if ok:
            return value
        raise value


def _gate_methods(gate: LMGate) -> dict[str, Callable[..., Any]]:
    def settle(seq: int, weight: int, ok: bool, throttled: bool, retry_after: float | None, tokens: int,
               cost: float | None) -> None:
        slot = Slot(gate, seq, weight)
        slot.report(tokens=tokens, cost=cost)
        gate._settle(slot, ok, throttled, retry_after)

    return {"acquire": gate._acquire_seq, "settle": settle,
            "refund": lambda seq, weight: gate._refund(Slot(gate, seq, weight))}


class RemoteGate(LMGate):
    """The driver's gate seen from a worker: every admission, release and refund is decided there, so the
    limit, its AIMD and the budgets count the requests of all workers together. What the slot measured
    (tokens, cost, throttled with its Retry-After) travels with the release."""

    def __init__(self, rpc: _RpcClient, concurrency: int):
        super().__init__(concurrency)
        self._rpc = rpc

    def _acquire_seq(self, weight: int = 1) -> int:
        return self._rpc.call("acquire", weight)

    async def _aacquire_seq(self, weight: int = 1) -> int:
        acquiring = asyncio.get_running_loop().run_in_executor(None, self._acquire_seq, weight)
        try:
            return await asyncio.shield(acquiring)
        except asyncio.CancelledError:  # the slot the thread is still waiting for is given back once it comes
            acquiring.add_done_callback(
                lambda f: f.cancelled() or f.exception() is not None or self._rpc.call("refund", f.result(), weight))
            raise

    def _settle(self, slot: Slot, ok: bool, throttled: bool, retry_after: float | None) -> None:
        if slot._released or not slot.seq:
            return
        slot._released = True
        self._rpc.call("settle", slot.seq, slot.weight, ok, throttled, retry_after, slot._tokens, slot._cost)

    def _refund(self, slot: Slot) -> None:
        if slot._released or not slot.seq:
            return
        slot._released = True
        self._rpc.call("refund", slot.seq, slot.weight)

    def snapshot(self) -> Any:
        raise NotImplementedError("a worker's gate has no figures of its own: the driver's gate has them")

    def close(self, reason: str) -> None:
        raise NotImplementedError("the driver closes the run's gate")


class _RemoteDedup:
    """The program's dedup callback in a worker: embed here, let the driver's filter decide."""

    def __init__(self, rpc: _RpcClient, embedder: Any):
        self._rpc, self._embedder = rpc, embedder

    def __call__(self, queries: list[str]) -> list[bool]:
        return self._rpc.call("decide", list(queries), self._embedder.embed(queries))


# --- the worker process ---------------------------------------------------------------------------------
def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed pipe ends the worker instead
        pass


def _fresh_clients() -> None:
    """Forget the HTTP clients the parent made before the fork (a bench, a notebook or a test that ran a
    synth before): their keep-alive sockets are the parent's, and two workers sending on one connection
    would read each other's replies. litellm makes new ones on the next request."""
    import litellm
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler

    litellm.in_memory_llm_clients_cache.flush_cache()
    litellm.module_level_client = HTTPHandler(timeout=litellm.request_timeout)
    litellm.module_level_aclient = AsyncHTTPHandler(timeout=litellm.request_timeout)


def _portable(outcome: SeedOutcome, settings: Any, command: str) -> SeedOutcome:
    """An outcome the driver can unpickle and classify: a model failure is described here (its exception
    may hold clients that do not pickle), a budget keeps its reason, a bug becomes a WorkerCrash."""
    from mmat.preflight import describe_failure

    if outcome.error is None:
        return outcome
    if outcome.abandoned:
        refused = budget_error(outcome.error)
        return SeedOutcome(outcome.seed, error=BudgetExhausted(refused.reason, str(refused)) if refused else None,
                           abandoned=True)
    failure = describe_failure(outcome.error, settings, command)
    if failure is None:
        text = "".join(traceback.format_exception(outcome.error)).rstrip()
        return SeedOutcome(outcome.seed, error=WorkerCrash(f"seed {outcome.seed.index} failed in worker "
                                                           f"process {os.getpid()}:\n{text}"))
    return SeedOutcome(outcome.seed, failure=failure)


def _worker_main(conn: mpc.Connection, settings: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the workers
    _die_with_parent()
    _fresh_clients()
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            try:
                conn.send(message)
            except (OSError, ValueError):  # the driver is gone (PDEATHSIG follows)
                pass

    try:
        message = conn.recv()
    except EOFError:
        return
    if message[0] != "start":
        return
    try:
        scheduler, scope = _build(message[1], settings, send)
    except BaseException:  # noqa: BLE001 -- the driver raises it with the traceback
        send(("crash", traceback.format_exc()))
        return
    send(("ready",))
    command = message[1]["command"]
    idle_mark = object()

    def forward() -> None:
        while True:
            outcome = scheduler.outcomes.get()
            if outcome is idle_mark:
                send(("idle",))
                continue
            try:
                send(("outcome", _portable(outcome, settings, command)))
            except Exception as e:  # noqa: BLE001 -- a result that does not pickle is a bug: say which
                send(("outcome", SeedOutcome(outcome.seed, error=WorkerCrash(
                    f"seed {outcome.seed.index}'s result could not be sent to the driver: {e!r}"))))

    def report_idle() -> None:
        scheduler.pool.wait_idle()
        scheduler.outcomes.put(idle_mark)  # after every outcome of the units that were in flight

    threading.Thread(target=forward, name="mmat-worker-forward", daemon=True).start()
    with scope:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                break
            if message[0] == "seed":
                _, seed, workspace, order, redo = message
                scheduler.submit(seed, Path(workspace), order=order, redo=redo)
            elif message[0] == "stop":
                scheduler.stop()
                threading.Thread(target=report_idle, daemon=True).start()
            elif message[0] == "close":
                break
        scheduler.stop()
        scheduler.pool.wait_idle(CLOSE_TIMEOUT_S)
        from mmat.sandbox.pool import close_shared_pools

        close_shared_pools()  # its warm sandboxes (processes, cgroups, quota mounts) go down with it
    send(("closed",))


def _build(start: dict[str, Any], settings: Any, send: Callable[[tuple], None]) -> tuple[Any, Any]:
    """The worker's scheduler over its own program, and the scope that routes its LM requests to the
    driver's gate."""
    from mmat.lm_gate import use_gate
    from mmat.pipeline.scheduler import EmbedBatcher, SeedScheduler
    from mmat.pipeline.synth import build_program
    from mmat.store.recorder import LMCallRecorder, RowSink
    from mmat.structured import remember_models

    request = start["request"]
    remember_models(start["structured"])
    rpc = _RpcClient(start["address"], start["authkey"])
    embedder = EmbedBatcher()
    pool = start["pool"]
    pool.use_embedder(embedder)
    program = build_program(settings, request, pool, _RemoteDedup(rpc, embedder), announce=False)
    rows = RowSink(lambda table, batch: send(("rows", table, batch)))  # each row goes to the driver at once
    scheduler = SeedScheduler(program, LMCallRecorder(rows, start["run_id"]), threads=start["threads"],
                              tools=request.tools)
    return scheduler, use_gate(RemoteGate(rpc, settings.concurrency))


# --- the driver's side ----------------------------------------------------------------------------------
class _Worker:
    def __init__(self, process: Any, conn: mpc.Connection):
        self.process, self.conn = process, conn
        self.ready, self.idle, self.closed = threading.Event(), threading.Event(), threading.Event()
        self.crash: str | None = None
        self.lock = threading.Lock()

    def send(self, message: tuple) -> bool:
        with self.lock:
            try:
                self.conn.send(message)
                return True
            except (OSError, ValueError):
                return False


class ProcessExecutor:
    """Worker processes for one synth run: :meth:`fork` them first, :meth:`start` them once the store, gate and
    dedup filter exist, :meth:`submit` seeds, read ended seeds from ``outcomes``, :meth:`close` at the end."""

    def __init__(self, workers: list[_Worker]):
        self._workers = workers
        self.outcomes: queue.Queue[SeedOutcome] = queue.Queue()
        self._rpc: _RpcServer | None = None
        self._store: Any = None
        self._closed = False

    @classmethod
    def fork(cls, n: int, settings: Any) -> ProcessExecutor:
        """Fork ``n`` workers now. Call it before the process opens connections or starts threads."""
        if n < 1:
            raise ConfigError(f"--workers must be at least 1, got {n}")
        # what every worker needs, imported once here instead of once per worker after the fork
        import mmat.pipeline.synth  # noqa: F401
        import mmat.preflight  # noqa: F401
        import mmat.programs.synthesis  # noqa: F401
        import mmat.sandbox.pool  # noqa: F401
        import mmat.store  # noqa: F401
        from mmat.embed import Embedder

        # The tokenizer's Rust threads must not be used before a fork (it would warn in every worker and
        # turn its parallelism off there anyway); one text is tokenized serially whatever this says.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        Embedder.shared().embed(["load the model once, before the fork"])  # the workers share its pages
        from mmat.tools.bounded import start_decoders

        start_decoders()  # one decoders' forkserver (a process of its own) for all the workers

        context = get_context("fork")
        workers = []
        for i in range(n):
            parent, child = context.Pipe()
            # not daemonic: a worker starts processes of its own (sandboxes, the decoders' forkserver)
            process = context.Process(target=_worker_main, args=(child, settings),
                                      name=f"mmat-synth-worker-{i}")
            process.start()
            child.close()
            workers.append(_Worker(process, parent))
        return cls(workers)

    def unit_threads(self, concurrency: int) -> int:
        """Threads per worker: enough for twice its share of the slots (so the workers still busy at the
        end of a run fill the slots the others left), not all of them each: at 128 slots, 4 workers of 192
        threads queue every request behind hundreds of threads for their GIL."""
        return unit_threads(min(concurrency, 2 * -(-concurrency // len(self._workers))))

    def start(self, *, request: Any, gate: LMGate, dedup: Any, pool: Any, store: Any, run_id: str, threads: int,
              command: str) -> None:
        """Give every worker what it needs (the gate and the dedup filter stay here, served over the socket)
        and wait until each has built its program."""
        self._store = store
        self._rpc = _RpcServer(_gate_methods(gate) | {"decide": dedup.decide})
        payload = {"request": request, "address": self._rpc.address, "authkey": self._rpc.authkey, "pool": pool, "run_id": run_id,
                   "threads": threads, "command": command,
                   # the output modes the preflight resolved here, after the fork: a worker would otherwise
                   # probe each server again, without the run's settings (adapters are built without them)
                   "structured": resolved_models()}
        for worker in self._workers:
            threading.Thread(target=self._read, args=(worker,), name="mmat-worker-read", daemon=True).start()
            worker.send(("start", payload))
        for worker in self._workers:
            if not worker.ready.wait(START_TIMEOUT_S) or worker.crash is not None:
                why = worker.crash or f"it was not ready after {START_TIMEOUT_S:g} s"
                raise WorkerCrash(f"synthesis worker process {worker.process.pid} could not start:\n{why}")

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            except Exception as e:  # noqa: BLE001 -- a message that does not unpickle here
                self.outcomes.put(SeedOutcome(None, error=WorkerCrash(f"a worker's message could not be read: {e!r}")))
                continue
            kind = message[0]
            if kind == "rows":
                self._write(message[1], message[2])
            elif kind == "outcome":
                self.outcomes.put(message[1])
            elif kind == "idle":
                worker.idle.set()
            elif kind == "ready":
                worker.ready.set()
            elif kind == "crash":
                worker.crash = message[1]
                worker.ready.set()
            elif kind == "closed":
                worker.closed.set()
        if not worker.closed.is_set():  # it died on its own
            worker.crash = worker.crash or "it exited"
            worker.ready.set()
            if not self._closed:
                worker.process.join(1)
                self.outcomes.put(SeedOutcome(None, error=WorkerCrash(
                    f"synthesis worker process {worker.process.pid} died (exit status {worker.process.exitcode}); "
                    "what was complete is stored: rerun the same command to continue")))

    def _write(self, table: str, rows: list[dict[str, Any]]) -> None:
        from mmat.errors import StoreError

        try:
            self._store.writer.put(table, rows, surface_errors=False)
        except StoreError as e:  # the store closed after a failed run: its abandoned calls have nothing to keep
            log.debug("%d %s row(s) from a worker not stored: %s", len(rows), table, e)

    def submit(self, seed: Any, workspace: Path, *, order: int, redo: int = 0) -> None:
        self._workers[order % len(self._workers)].send(("seed", seed, str(workspace), order, redo))

    def stop(self) -> None:
        """No unit starts in any worker from now on; units in flight end (or meet the closed gate)."""
        for worker in self._workers:
            worker.idle.clear()
            worker.send(("stop",))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """After stop(): True once every worker's units in flight have ended (and their seeds were sent)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if worker.process.is_alive() and not worker.idle.wait(left):
                return False
        return True

    def close(self) -> None:
        """Stop the workers, let each take its sandboxes down, and end them (killed after CLOSE_TIMEOUT_S)."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.send(("close",))
        for worker in self._workers:
            worker.process.join(CLOSE_TIMEOUT_S)  # a started worker first takes its sandboxes down
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.conn.close()
        if self._rpc is not None:
            self._rpc.close()
