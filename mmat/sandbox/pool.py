"""A warm pool of sandbox workers: worker start off a trajectory's critical path.

``SandboxPool(size)`` keeps ``size`` workers started (namespaces, mounts, cgroups, Python; see
warm.py) and hands one to each ``acquire(workspace, tools=...)``, which returns an ordinary
``Sandbox`` on that workspace. Rules:

* **Never shared.** A worker serves exactly one sandbox; when that sandbox closes, its worker is
  killed with it (a restart inside the sandbox starts a fresh one, as always). Nothing of one
  trajectory can reach the next: a warm worker has run no model code, and each has its own uid,
  namespaces, cgroups and (root mode) workspace tmpfs.
* **Replacement in the background.** Taking a worker wakes the pool's thread, which starts a new
  one; acquire() never waits for it: with none ready (or other limits than the pool's) the
  sandbox is started cold, exactly as ``Sandbox(...)`` would.
* **Thread-safe.** Any number of threads may acquire at once.
* **Forks too.** ``Sandbox.fork()`` of a pooled sandbox (preference pairs) takes its fresh worker
  from the same pool.
* **No leaks.** close() (also at interpreter exit, Ctrl-C included) kills every warm worker and
  removes its cgroups, mounts and directories; a sandbox already handed out is its owner's to close.
  If the process is killed outright, the launchers kill their sandboxes when their pipes close and
  (root mode) the quota keeper takes the tmpfs mounts down, as for any sandbox; a rootless warm
  worker's tmpfs lives only in its own mount namespace and goes with it.

``shared_pool(settings)`` is the process-wide pool CodeAgent takes its sandboxes from
(``Settings.sandbox_pool`` workers; 0 turns pooling off).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat.errors import ConfigError, SandboxError
from mmat.sandbox.limits import Limits
from mmat.sandbox.modes import sandbox_mode
from mmat.sandbox.protocol import ToolHost
from mmat.sandbox.sandbox import Sandbox
from mmat.sandbox.warm import WarmWorker

if TYPE_CHECKING:
    from mmat.config import Settings

__all__ = ["SandboxPool", "shared_pool", "close_shared_pools"]

# After a failed start the pool waits this long (doubling, up to the cap) before it tries again.
RETRY_S, RETRY_CAP_S = 0.5, 30.0
# A replacement starts this long after a take, so it does not compete (CPU, GIL) with the acquire itself.
REFILL_DELAY_S = 0.05
# At most this many process-wide pools (one per distinct Limits); the least recently used is closed.
MAX_SHARED_POOLS = 2


class SandboxPool:
    """Keeps ``size`` sandbox workers started; see the module docstring."""

    def __init__(self, size: int, *, limits: Limits = Limits()) -> None:
        if not isinstance(size, int) or size < 0:
            raise ConfigError(f"a sandbox pool's size is a whole number >= 0, got {size!r}.")
        self.size = size
        self.limits = limits
        self.mode = sandbox_mode().name  # SandboxError (saying what to do) where no sandbox can run
        self.stats = {"warm": 0, "cold": 0, "started": 0, "start_failures": 0, "discarded": 0}
        self.last_error: str | None = None
        self._ready: deque[WarmWorker] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._refill, name="mmat-sandbox-pool", daemon=True)
        self._thread.start()
        atexit.register(self.close)
        _pools.add(self)

    # --- public API -------------------------------------------------------------------------------
    def acquire(self, workspace: Path | str, *, tools: ToolHost | None = None, seed: int = 0, limits: Limits | None = None) -> Sandbox:
        """A Sandbox on ``workspace`` for one trajectory: a warm worker when one is ready (and the
        limits are the pool's), else one started now. Close it (``with``) as any Sandbox."""
        if self._closed:
            raise SandboxError("this sandbox pool is closed: create a new SandboxPool.")
        limits = limits or self.limits
        warm = self._take() if limits == self.limits else None
        if warm is not None:
            try:
                sandbox = Sandbox(workspace, tools=tools, limits=limits, seed=seed, _warm=warm)
            except SandboxError as e:
                warm.destroy()  # the workspace is as it was: start cold below
                self._note_failure(f"a warm worker could not be used: {e}")
            except BaseException:
                if warm.used:
                    warm.destroy()
                else:
                    self._give_back(warm)  # e.g. a bad tool host: the worker itself is untouched
                raise
            else:
                with self._cond:
                    self.stats["warm"] += 1
                sandbox.pool = self
                return sandbox
        sandbox = Sandbox(workspace, tools=tools, limits=limits, seed=seed)
        with self._cond:
            self.stats["cold"] += 1
        sandbox.pool = self
        return sandbox

    def ready(self) -> int:
        """Warm workers waiting right now."""
        with self._cond:
            return len(self._ready)

    def wait_ready(self, n: int | None = None, timeout_s: float = 30.0) -> bool:
        """Wait until ``n`` (default: size) workers are warm; False at the timeout."""
        want = self.size if n is None else min(n, self.size)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._ready) < want and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return len(self._ready) >= want

    @property
    def closed(self) -> bool:
        """True once close() ran."""
        return self._closed

    def close(self) -> None:
        """Stop refilling and take every warm worker down (idempotent; also run at interpreter exit)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        atexit.unregister(self.close)
        if self._thread is not threading.current_thread():
            self._thread.join(self.limits.start_timeout_s + 5)
        with self._cond:
            left, self._ready = list(self._ready), deque()
        for warm in left:
            warm.destroy()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------
    def _take(self) -> WarmWorker | None:
        dead: list[WarmWorker] = []
        found = None
        with self._cond:
            while self._ready:
                warm = self._ready.popleft()
                if warm.alive():
                    found = warm
                    break
                dead.append(warm)
                self.stats["discarded"] += 1
            self._cond.notify_all()  # the refill thread starts the replacements
        for warm in dead:
            warm.destroy()
        return found

    def _give_back(self, warm: WarmWorker) -> None:
        with self._cond:
            if not self._closed and len(self._ready) < self.size:
                self._ready.appendleft(warm)
                self._cond.notify_all()
                return
        warm.destroy()

    def _note_failure(self, why: str) -> None:
        with self._cond:
            self.stats["start_failures"] += 1
            self.last_error = why

    def _refill(self) -> None:
        failures = 0
        while True:
            with self._cond:
                if not self._closed and len(self._ready) >= self.size:
                    while not self._closed and len(self._ready) >= self.size:
                        self._cond.wait()
                    self._cond.wait(REFILL_DELAY_S)
                if self._closed:
                    return
            try:
                warm = WarmWorker.start(self.mode, self.limits)
            except Exception as e:  # noqa: BLE001 - recorded; acquire() starts cold meanwhile
                failures += 1
                self._note_failure(f"{type(e).__name__}: {e}")
                with self._cond:
                    self._cond.wait(min(RETRY_CAP_S, RETRY_S * 2 ** (failures - 1)))
                continue
            failures = 0
            with self._cond:
                if not self._closed:
                    self._ready.append(warm)
                    self.stats["started"] += 1
                    self._cond.notify_all()
                    continue
            warm.destroy()
            return


_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child must not use (or kill) its parent's warm workers: its copies of the pools are closed, empty."""
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared.clear()
    for pool in list(_pools):
        pool._cond = threading.Condition()
        pool._ready = deque()
        pool._closed = True
        atexit.unregister(pool.close)


os.register_at_fork(after_in_child=_after_fork_in_child)

_shared_lock = threading.Lock()
_shared: OrderedDict[tuple[Any, ...], SandboxPool] = OrderedDict()


def shared_pool(settings: Settings, limits: Limits | None = None) -> SandboxPool | None:
    """The process-wide pool for these limits (``Settings.sandbox_pool`` workers; None when that is 0)."""
    size = settings.sandbox_pool
    if size <= 0:
        return None
    limits = limits or Limits.from_settings(settings)
    key = (size, limits)
    evicted: list[SandboxPool] = []
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None or pool.closed:
            pool = SandboxPool(size, limits=limits)
            _shared[key] = pool
        _shared.move_to_end(key)
        while len(_shared) > MAX_SHARED_POOLS:
            evicted.append(_shared.popitem(last=False)[1])
    for old in evicted:
        old.close()
    return pool


def close_shared_pools() -> None:
    """Close every process-wide pool (they also close at interpreter exit)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.close()
