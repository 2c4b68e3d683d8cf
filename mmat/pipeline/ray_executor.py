"""`mmat synth --executor ray`: seeds run as Ray actor calls; the driver keeps the store.

Why Ray: it is what synthesis fleets already run on (distilabel, verl, OpenRLHF), it starts on a laptop
(`ray.init()`) and joins a cluster by address, and it retries work whose process died. mmat adds only
what Ray does not know about the data:

- **Workers** (``SynthWorker`` actors, ``--workers N``) each build their own ``Synthesis`` program —
  their own sandboxes and model clients — from the run's settings, and run seeds concurrently
  (``max_concurrency`` = concurrency / workers). A seed's LM calls are recorded in the worker and sent
  back with its result.
- **One dedup index** (``DedupActor``): near-duplicate and 13-gram checks for every worker go through
  one actor holding the run's ``QueryFilter``, so two workers cannot both accept the same query.
- **Files come home**: a worker on another node packs the seed's workspace (``tar``) and the driver
  unpacks it at the same absolute path with tarfile's ``data`` filter (no links out, no special files,
  no absolute names) — model-written files are untrusted; on the driver's own node nothing is copied.
- **The driver** writes every row through the store's single writer, marks seeds done after their rows
  are flushed and draws the progress bar — the same code path as the thread executor, so resume after
  a SIGKILL of the driver and the row counts are exactly those of a local run.

A worker process that dies mid-seed is restarted by Ray and the seed is retried there
(``max_restarts``/``max_task_retries``); nothing of the half-done seed was written, and its workspace is
cleared before the redo. Ray is an optional extra (``pip install 'mmat[ray]'``).

On Ray a seed is one unit of work (``program(seed)`` in a worker): the task-level scheduler
(``mmat.pipeline.scheduler``) and the run's LM gate (budgets, adaptive concurrency) belong to the local
executor, so ``--max-calls``/``--max-cost`` are refused with ``--executor ray``.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from mmat.config import Settings
from mmat.errors import ConfigError
from mmat.structured import resolved_models

__all__ = ["RayExecutor", "ray_available", "RAY_EXTRA_HINT"]

RAY_EXTRA_HINT = "pip install 'mmat[ray]' (or pip install ray)"
log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 30.0  # how long shutdown waits for the workers to take their warm sandboxes down
_RESTARTS = 2  # a dying worker process is restarted (and its in-flight seeds retried) this many times


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _pack(workspace: Path) -> bytes | None:
    if not workspace.is_dir():
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(workspace), arcname=".", recursive=True)
    return buf.getvalue()


def _unpack(data: bytes, workspace: Path) -> None:
    """Unpack a worker's workspace where the driver expects it; the data filter refuses links and escapes."""
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(str(workspace), filter="data")


def _actor_classes():
    """The Ray actor classes (defined lazily: importing this module must not need Ray)."""
    import ray

    @ray.remote
    class DedupActor:
        def __init__(self, existing, threshold: float, exclude):
            import numpy as np

            from mmat.pipeline.synth import QueryFilter

            self.filter = QueryFilter(np.asarray(existing, np.float32) if existing is not None else None, threshold, exclude)

        def check(self, queries: list[str]):
            flags = self.filter(queries)
            vectors = {q: self.filter.vectors[q].tolist() for q, dup in zip(queries, flags) if not dup}
            contaminated = [q for q in queries if q in self.filter.contaminated]
            return flags, vectors, contaminated

    @ray.remote
    class SynthWorker:
        def __init__(self, settings_record: dict, request_record: dict, pool, dedup, run_id: str, driver_node: str,
                     structured: dict):
            from mmat.config import Settings
            from mmat.lm import configure_litellm
            from mmat.pipeline.synth import SynthRequest, build_program
            from mmat.plugins import load_plugins
            from mmat.structured import remember_models

            load_plugins()  # plug-in tools and providers exist in every worker, as in the driver
            self.settings = Settings.model_validate(settings_record)
            configure_litellm(self.settings)
            # the output modes the driver's preflight resolved: adapters are built without settings, and
            # would probe each server again from this worker's environment (without a --api-base)
            remember_models(structured)
            self.request = SynthRequest.model_validate(request_record)
            self.dedup, self.run_id, self.driver_node = dedup, run_id, driver_node
            self.local = threading.local()
            self.program = build_program(self.settings, self.request, pool, self._dedup)

        def _dedup(self, queries: list[str]) -> list[bool]:
            import ray

            flags, vectors, contaminated = ray.get(self.dedup.check.remote(queries))
            self.local.vectors.update(vectors)
            self.local.contaminated.update(contaminated)
            return flags

        def close(self) -> None:
            """Take this worker's warm sandboxes down (their processes, cgroups and quota mounts) while it
            can: Ray kills a worker's child processes with it, the mounts' keeper among them."""
            from mmat.sandbox.pool import close_shared_pools

            close_shared_pools()

        def run_seed(self, seed, workspace: str, redo: int):
            import ray

            from mmat.pipeline.synth import run_seed
            from mmat.store.recorder import LMCallRecorder, RowSink

            self.local.vectors, self.local.contaminated = {}, set()
            rows: list[dict] = []
            collect = threading.Lock()

            def keep(table: str, batch: list[dict]) -> None:
                with collect:
                    rows.extend(batch)

            result = run_seed(self.program, seed, Path(workspace), LMCallRecorder(RowSink(keep), self.run_id), redo)
            remote = ray.get_runtime_context().get_node_id() != self.driver_node
            return {"result": result, "lm_calls": rows, "vectors": self.local.vectors,
                    "contaminated": sorted(self.local.contaminated),
                    "workspace": _pack(Path(workspace)) if remote else None, "pid": os.getpid()}

    return DedupActor, SynthWorker


class RayExecutor:
    """Runs seeds on Ray actors; ``submit`` returns a ``concurrent.futures.Future`` of the seed's result.

    The future resolves on the driver after the worker's LM-call rows went to the store's writer, its
    accepted queries' vectors joined the driver's dedup mirror (for the query_embeddings rows) and, for a
    worker on another node, its workspace was unpacked — so the caller consumes it exactly like a result
    of the local thread executor.
    """

    def __init__(self, settings: Settings, request: Any, *, pool: Any, dedup: Any, store: Any, run_id: str,
                 address: str | None = None, workers: int | None = None):
        if not ray_available():
            raise ConfigError(f"--executor ray needs Ray: {RAY_EXTRA_HINT}.")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray phones home unless told not to
        if not address:
            # A local instance talks over loopback only: without this Ray's processes pick the host's
            # interface address for themselves (node_ip_address_from_perspective) and connect over it.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        self.ray, self.store, self.dedup = ray, store, dedup
        self._started_ray = False
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                             _node_ip_address="127.0.0.1")
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Check --ray-address "
                                  "(ray://HOST:10001 or HOST:6379) or leave it out for a local instance.") from None
            self._started_ray = True
        n = max(1, workers or int(ray.available_resources().get("CPU", 1)))
        per_worker = max(1, -(-settings.concurrency // n))
        DedupActor, SynthWorker = _actor_classes()
        existing = dedup.matrix if len(dedup.matrix) else None
        self.dedup_actor = DedupActor.options(max_concurrency=1).remote(existing, dedup.threshold, dedup.exclude)
        driver_node = ray.get_runtime_context().get_node_id()
        record = settings.model_dump(mode="json")
        # Held for the run: a restarted worker re-runs __init__ with these arguments, so they must outlive
        # the first creation (an argument Ray put in its object store itself would be freed after it).
        self._pool_ref = ray.put(pool)
        self.workers = [
            SynthWorker.options(max_concurrency=per_worker, max_restarts=_RESTARTS, max_task_retries=_RESTARTS,
                                num_cpus=0).remote(record, request.model_dump(mode="json"), self._pool_ref, self.dedup_actor,
                                                   run_id, driver_node, resolved_models())
            for _ in range(n)
        ]
        self._next = 0
        self._lock = threading.Lock()

    def submit(self, seed: Any, workspace: Path, redo: int = 0) -> Future:
        with self._lock:
            worker = self.workers[self._next % len(self.workers)]
            self._next += 1
        ref = worker.run_seed.remote(seed, str(workspace), redo)
        out: Future = Future()

        def land(done: Future) -> None:
            try:
                payload = done.result()
                if payload["lm_calls"]:
                    self.store.writer.put("lm_calls", payload["lm_calls"], surface_errors=False)
                self.dedup.absorb(payload["vectors"], payload["contaminated"])
                if payload["workspace"] is not None:
                    _unpack(payload["workspace"], Path(workspace))
                out.set_result(payload["result"])
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which classifies it
                out.set_exception(_explain(e))

        ref.future().add_done_callback(land)
        return out

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        try:  # each worker closes its sandbox pools first (a worker that is gone or stuck is not waited on)
            self.ray.get([worker.close.remote() for worker in self.workers], timeout=CLOSE_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 -- the kill below still ends them
            log.warning("Ray workers did not all close their sandboxes (%s); killing them", str(e).splitlines()[0] if str(e) else type(e).__name__)
        for worker in self.workers:
            self.ray.kill(worker)
        self.ray.kill(self.dedup_actor)
        if self._started_ray:
            self.ray.shutdown()


def _explain(error: BaseException) -> BaseException:
    """Ray's wrappers around a worker's failure: unwrap the model's errors, name the rest."""
    import ray.exceptions as rx

    if isinstance(error, rx.RayTaskError):
        cause = error.as_instanceof_cause()
        inner = getattr(error, "cause", None)
        return inner if isinstance(inner, BaseException) else cause
    if isinstance(error, (rx.RayActorError, rx.ActorDiedError)):
        return RuntimeError(f"a Ray synthesis worker died {_RESTARTS + 1} times running this seed: {error}")
    if isinstance(error, rx.RuntimeEnvSetupError):
        return ConfigError(f"Ray workers could not start: {error}. Every node needs mmat installed (pip install "
                           "mmat) or a runtime_env that provides it.")
    return error


