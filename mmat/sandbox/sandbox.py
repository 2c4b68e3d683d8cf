"""The Sandbox: a worker process that runs model-written Python, step after step, with state.

Isolation, exactly (Linux; built from namespaces, cgroups, rlimits and seccomp, no bwrap). As root
("root mode") or, for any other user, inside a new user namespace ("rootless mode"); the README's
sandbox section says what differs between the two (mmat.sandbox.modes picks one):

* **Process and namespaces.** A launcher (``_launcher.py``, forked by the parent's pre-imported
  zygote) unshares mount, network, IPC, UTS and PID namespaces. The sandbox's PID 1 is a tiny init; the worker is PID 2 and
  sees only the processes of its own sandbox (``/proc`` mounted with ``hidepid=2``).
* **No network.** A fresh network namespace has only ``lo``, and it is down: no route to the host's
  127.0.0.1 or anywhere else. ``/proc/net/*`` shows only ``lo``; ``/sys`` is not mounted. seccomp
  makes ``socket()`` fail with EAFNOSUPPORT for every family except AF_UNIX, and host Unix sockets
  are unreachable because the host filesystem is not there.
* **Filesystem.** The worker's root is a read-only tmpfs holding only read-only binds of ``/usr``,
  the Python installation and the virtualenv (at their host paths), ``/etc/ld.so.cache``,
  ``/etc/fonts`` and ``/var/cache/fontconfig``; the workspace read-write at ``/workspace`` (the
  working directory); a private ``/tmp`` and ``/dev/shm`` (tmpfs, ``Limits.tmp_mb``);
  ``/dev/{null,zero,full,random,urandom}``; ``/proc`` of its own PID namespace. The host root is detached after ``pivot_root``. Host ``/etc``, ``/root``,
  the repository, ``MMAT_HOME`` and the host ``/tmp`` do not exist inside. All binds are
  nosuid,nodev. Input files are copied into the workspace.
* **Identity.** The worker runs as its own random uid/gid (no supplementary groups), with every
  capability set empty (bounding, permitted, effective, inheritable, ambient) and no_new_privs, so
  it cannot regain root through setuid binaries. It is a fork of the launcher, not an exec: the
  launcher has already imported what the worker needs, and the worker's code runs from its pristine
  source as ``__main__``.
* **Environment.** Built from scratch (``runtime.sandbox_env``): PATH, HOME=/workspace, LANG,
  TZ, cache dirs in /tmp, one thread per math library. Nothing is inherited from the parent.
  Python starts with ``-I -S -B``; mmat itself is not importable inside.
* **Resources.** rlimits (soft = hard): address space, file size, processes (per uid, so per
  sandbox), open files, no core dumps, CPU (hard = worker lifetime, soft = per step). Per-sandbox
  cgroups (``cgroups.py``) bound the memory and tasks of all its processes together where writable.
  The parent enforces the wall time per step (tool calls excluded), the workspace quota (bytes and
  entries; during the step a tmpfs of that size, ``quota.py``: root mode bound over the workspace on
  the host, rootless mode mounted in the sandbox's own mount namespace and reached by the parent
  through its fd; after each step a check) and the tool-call count. Any limit hit kills the step and restarts the worker (state lost).
* **Frozen between steps.** After each step every process and thread of the sandbox is stopped
  (cgroup freezer, else SIGSTOP by its init; SIGCONT is refused inside) until the next step, so what
  the parent inspects after a step cannot change under it; the same while the parent serves a tool
  call. State survives.
* **seccomp** (``seccomp.py``): mount, pivot_root, chroot, unshare, setns, ptrace, bpf, io_uring,
  keyctl, module loading, namespace flags on clone and more fail with EPERM.
* **Processes.** subprocess/os.system work inside (contained by all of the above). Every process a
  step started is killed when the step ends; a fork bomb stops at ``Limits.max_processes``.
* **Channel.** JSON lines over two pipes (fds 3 and 4 in the worker). Sandboxed code can write junk
  or close them: the parent validates every line with deadlines and size caps, and treats any
  violation as a failed step followed by a restart. The parent never execs model code.
* **Workspace files are untrusted** (``safefs``, ``workspace``). A thread of the sandbox may swap
  any entry at any time, so the parent never checks a path and then opens it: walks, scans, copies,
  chown and unlink go through directory fds without following links, reads open regular files only
  (``openat2`` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, else O_NOFOLLOW walks; O_NONBLOCK, so a
  FIFO never blocks), and mmat.tools hands its libraries bytes, never paths. Hygiene: before each
  tool call and after each step the parent also deletes symlinks and special files, so that naive
  tool hosts and people only meet regular files and directories.
* **Model input never raises out of run().** Everything the worker sends is validated (deeply
  nested JSON included); tool arguments nested deeper than ``MAX_TOOL_ARGS_DEPTH`` or larger than
  ``MAX_TOOL_ARGS_BYTES`` are refused as a ToolError before any tool sees them, lone surrogates are
  replaced. Control characters, ANSI escapes, bidi overrides and surrogates in stdout, errors, tool
  records and final answers are written as visible escapes (``escape.py``) before they reach the
  model, the store or a terminal.
* **The worker's own code.** Its file is read-only inside the sandbox; in memory, a step (or one of
  its threads) that rebinds the worker's functions, classes, the builtins or module functions it
  calls is noticed before and after every step and the worker is restarted from the file (event
  ``stop`` with reason ``tampered``, a note in the step's output). A step that rewrites memory via
  ctypes can defeat that check, and gains nothing by it: the parent trusts no message anyway.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError, SandboxError
from mmat.sandbox import observations as obs
from mmat.sandbox import workspace as wsp
from mmat.sandbox.limits import Limits
from mmat.sandbox.modes import sandbox_mode
from mmat.sandbox.process import ChannelTimeout, ExitInfo, WorkerGone, WorkerProcess, allocate_uid
from mmat.sandbox.escape import escape_text, escape_value, nesting_depth, scrub_surrogates
from mmat.sandbox.protocol import MAX_TOOL_ARGS_BYTES, MAX_TOOL_ARGS_DEPTH, DoneMsg, ProtocolViolation, ToolHost, ToolMsg
from mmat.sandbox.quota import NamespaceTmpfs, WorkspaceTmpfs
from mmat.sandbox.warm import WarmWorker
from mmat.sandbox.results import StepError, StepResult, ToolCall
from mmat.sandbox.runtime import site_paths

__all__ = ["Sandbox"]

# restart reason: the worker was already dead when a step was sent to it
_GONE_BEFORE_STEP = "exited_between_steps"
# Names that sandboxed code already has; a tool host cannot shadow them.
_RESERVED_NAMES = frozenset({"final_answer", "ToolError"})


@dataclass
class _RecordedTool:
    name: str
    kwargs: dict[str, Any]
    reply: dict[str, Any]


@dataclass
class _Executed:
    """A step that ran to completion (with or without an error) in the current worker: replayed by fork()."""

    step: int
    code: str
    tools: list[_RecordedTool]
    error_type: str | None


@dataclass
class _Outcome:
    result: StepResult
    recorded: list[_RecordedTool] = field(default_factory=list)
    restart_reason: str | None = None


class _TooManyToolCalls(Exception):
    pass


class _ToolHostFailure(Exception):
    """Carries an exception from the tool host that is not the model's to read, out of the step loop."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _refuse_arguments(msg: ToolMsg) -> str | None:
    """Why a tool call's arguments are refused before any tool sees them (None: they are fine)."""
    depth = nesting_depth(msg.kwargs, MAX_TOOL_ARGS_DEPTH)
    if depth > MAX_TOOL_ARGS_DEPTH:
        return f"the arguments nest more than {MAX_TOOL_ARGS_DEPTH} levels deep; pass plain values (names, numbers, short lists)"
    size = len(json.dumps(msg.kwargs, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_TOOL_ARGS_BYTES:
        return f"the arguments are {size:,} bytes, more than the {MAX_TOOL_ARGS_BYTES:,} a tool call may carry; save large data to a file and pass its name"
    return None


Responder = Callable[[ToolMsg, int], tuple[dict[str, Any], ToolCall, _RecordedTool]]


def _shutdown(holder: list[WorkerProcess | None], workspace: Path, quota: list[WorkspaceTmpfs | NamespaceTmpfs | None]) -> None:
    """Finalizer for a Sandbox that was never closed (or at interpreter exit): take its worker down
    and give the workspace back to the parent's uid."""
    worker = holder[0]
    if worker is not None:
        holder[0] = None
        worker.kill()
    if quota[0] is not None:
        quota[0].release()
        quota[0] = None
    if workspace.exists():
        wsp.chown_tree(workspace, os.geteuid(), os.getegid())


class Sandbox:
    """A persistent Python worker for one trajectory. See the module docstring for the isolation.

    Usage::

        with Sandbox(workspace, tools=host, limits=Limits(wall_s=10)) as sb:
            r = sb.run("text = ocr('page.png')\nprint(text[:100])")
    """

    def __init__(
        self,
        workspace: Path | str,
        *,
        tools: ToolHost | None = None,
        limits: Limits = Limits(),
        inputs: Iterable[Path | str] = (),
        seed: int = 0,
        _warm: WarmWorker | None = None,
    ) -> None:
        """``_warm``: a pre-started worker of a SandboxPool (mmat.sandbox.pool), used up by this sandbox."""
        self.mode = sandbox_mode()  # "root" or "rootless"; SandboxError saying what to do when neither works
        if tools is not None and not (callable(getattr(tools, "names", None)) and callable(getattr(tools, "call", None))):
            raise ConfigError(f"tools={tools!r} is not a tool host: it needs names() and call(name, kwargs) methods.")
        self.workspace = Path(workspace).resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.tools = tools
        self.limits = limits
        self.seed = seed
        self.events: list[dict[str, Any]] = []
        if _warm is not None and (_warm.mode != self.mode.name or _warm.limits != limits):
            raise ConfigError("a warm sandbox worker was started for another mode or other limits.")
        self.uid = _warm.uid if _warm is not None else allocate_uid()  # the worker's uid as it sees it; on the host too in root mode
        # who owns the workspace while the worker runs: rootless, the caller's uid is the worker's on the host
        self.host_uid, self.host_gid = (self.uid, self.uid) if self.mode.name == "root" else (os.getuid(), os.getgid())
        self.inputs = wsp.copy_inputs(self.workspace, [Path(p) for p in inputs])
        self._tool_specs = self._describe_tools(tools)
        self._history: list[_Executed] = []
        self._removed: list[str] = []  # symlinks/special files deleted during the current step
        self._step = 0
        self._lock = threading.RLock()
        self._closed = False
        self._owns_workspace = False
        self.pool: Any = None  # the SandboxPool this sandbox came from (fork() takes its workers from it too)
        self._holder: list[WorkerProcess | None] = [None]
        # the quota holds during each step: root mode, a tmpfs over the workspace; rootless, a tmpfs in the
        # sandbox's mount namespace that the parent reaches through its fd (quota.py); set up by _start()
        self._quota: list[WorkspaceTmpfs | NamespaceTmpfs | None] = [None]
        if _warm is not None:
            self._quota[0] = _warm.adopt(self.workspace)  # the warm worker's /workspace becomes this one
        elif self.mode.name == "root":
            self._quota[0] = WorkspaceTmpfs.mount(self.workspace, limits, uid=self.host_uid, gid=self.host_gid)
        self._finalizer = weakref.finalize(self, _shutdown, self._holder, self.workspace, self._quota)
        try:
            self._start("start", _warm)
        except BaseException:
            self._finalizer()
            raise

    # --- public API -----------------------------------------------------------------------------
    def run(self, code: str) -> StepResult:
        """Run one step of model-written code in the persistent namespace."""
        if not isinstance(code, str):
            raise ConfigError(f"Sandbox.run takes the code as a str, got {type(code).__name__}.")
        with self._lock:
            self._ensure_open()
            step = self._step
            self._step += 1
            outcome = self._run_step(step, code, self._live_tool)
            if outcome.restart_reason is None:
                self._history.append(_Executed(step, code, outcome.recorded, outcome.result.error.type if outcome.result.error else None))
            return outcome.result

    def fork(self, workspace: Path | str | None = None, *, tools: ToolHost | None = None) -> Sandbox:
        """An isolated copy of this sandbox's state: same variables, same files, separate everything.

        How: a fresh worker (new namespaces, new uid) gets a copy of the workspace, then every step
        this worker has run since it (re)started is replayed in it, with tool calls answered from
        the recorded results; finally its workspace is made identical to this one. Code whose
        effects are not a function of the code (numpy's unseeded RNG, time, os.urandom) can give
        the fork different values; ``random`` is seeded per sandbox, so it replays the same.

        ``workspace``: an empty directory for the fork; by default a sibling temporary directory
        that close() deletes. ``tools``: the tool host for the fork's own steps; by default
        ``self.tools.for_workspace(fork_dir)`` when the host has that method.
        """
        with self._lock:
            self._ensure_open()
            t0 = time.perf_counter()
            self._sanitize()
            own = workspace is None
            if own:
                dst = Path(tempfile.mkdtemp(prefix=f"{self.workspace.name}.fork-", dir=self.workspace.parent))
            else:
                dst = Path(workspace).resolve()  # type: ignore[arg-type]
                if dst.exists() and any(dst.iterdir()):
                    raise ConfigError(f"fork workspace {dst} is not empty: pass an empty or new directory.")
            fork_tools = tools if tools is not None else self._tools_for(dst)
            dst.mkdir(parents=True, exist_ok=True)
            wsp.copy_tree(self.workspace, dst)  # through fds: a live worker may be swapping entries
            try:
                pool = self.pool
                if pool is not None and not pool.closed:  # a warm worker for the fork too, when one is ready
                    child = pool.acquire(dst, tools=fork_tools, seed=self.seed, limits=self.limits)
                else:
                    child = Sandbox(dst, tools=fork_tools, limits=self.limits, seed=self.seed)
            except BaseException:
                if own:
                    shutil.rmtree(dst, ignore_errors=True)
                raise
            child._owns_workspace = own
            try:
                diverged = child._replay(self._history)
                wsp.mirror(self.workspace, dst)
                wsp.chown_tree(dst, child.host_uid, child.host_gid)
            except BaseException:
                child.close()
                raise
            child._step = self._step
            ms = (time.perf_counter() - t0) * 1000
            child.events.append(self._event("forked", source=str(self.workspace), replayed_steps=len(self._history), diverged=diverged, ms=ms))
            self.events.append(self._event("fork", target=str(dst), replayed_steps=len(self._history), diverged=diverged, ms=ms))
            return child

    def close(self) -> None:
        """Stop the worker; give the workspace back to the parent's uid (or delete a fork's own dir)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker, self._holder[0] = self._holder[0], None
            if worker is not None:
                worker.kill()
            self._finalizer.detach()
            quota, self._quota[0] = self._quota[0], None
            if quota is not None:
                quota.release(keep=not self._owns_workspace)  # the files go back to the directory underneath
            self.events.append(self._event("close", steps=self._step))
            if self._owns_workspace:
                shutil.rmtree(self.workspace, ignore_errors=True)
            elif self.workspace.exists():
                wsp.sanitize(self.workspace)
                wsp.chown_tree(self.workspace, os.geteuid(), os.getegid())

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def worker_pid(self) -> int | None:
        """Host pid of the current worker (for diagnostics)."""
        worker = self._holder[0]
        return worker.worker_pid if worker is not None else None

    # --- worker lifecycle -----------------------------------------------------------------------
    def _start(self, reason: str, warm: WarmWorker | None = None) -> None:
        self._sanitize()
        wsp.chown_tree(self.workspace, self.host_uid, self.host_gid)
        init = {
            "op": "init",
            "tools": self._tool_specs,
            "site_paths": list(site_paths()),
            "seed": self.seed,
            "max_output_chars": self.limits.max_output_chars,
            "cpu_s": self.limits.cpu_s,
        }
        t0 = time.perf_counter()
        try:
            if warm is not None:
                worker = warm.worker
                self._holder[0] = worker  # taken down by close() and the finalizer from here on
                worker.handshake(init, time.monotonic() + self.limits.start_timeout_s)
            else:
                worker = WorkerProcess.start(self.workspace, self.limits, init, uid=self.uid, rootless=self.mode.name == "rootless")
                if self.mode.name == "rootless":
                    self._take_tmpfs(worker)
        except SandboxError:
            self._holder[0] = None
            wsp.chown_tree(self.workspace, os.geteuid(), os.getegid())
            raise
        self._holder[0] = worker
        self._history = []
        # ms: what this start cost the caller (a warm worker: the handshake only; warm_ms: its own start, earlier)
        extra = {"pooled": True, "warm_ms": worker.start_ms} if warm is not None else {}
        ms = (time.perf_counter() - t0) * 1000 if warm is not None else worker.start_ms
        self.events.append(self._event(reason, worker_pid=worker.worker_pid, uid=self.uid, mode=self.mode.name, ms=ms, python=worker.python, **extra))
        # Not stopped yet: a fresh worker has run no model code, so nothing in it can change anything
        # before its first step; it is frozen when that step ends (and after every later one).

    def _take_tmpfs(self, worker: WorkerProcess) -> None:
        """Rootless: the new worker's workspace tmpfs gets the files (the directory's at the first start,
        the previous tmpfs's after a restart). On failure the worker is taken down."""
        try:
            fd = worker.take_workspace_fd()
            if self._quota[0] is None:
                self._quota[0] = NamespaceTmpfs.attach(fd, self.workspace, self.limits)
            else:
                self._quota[0].move_to(fd)  # type: ignore[union-attr]
        except BaseException:
            worker.kill()
            raise

    def _restart(self, why: str) -> ExitInfo:
        worker, self._holder[0] = self._holder[0], None
        info = worker.kill() if worker is not None else ExitInfo()
        self.events.append(self._event("stop", reason=why, signal=info.signal, code=info.code, cpu_s=info.cpu_s))
        self._start("restart")
        return info

    def _ensure_open(self) -> None:
        if self._closed:
            raise SandboxError("this sandbox is closed: create a new Sandbox (or fork before closing).")

    # --- one step -------------------------------------------------------------------------------
    def _run_step(self, step: int, code: str, responder: Responder) -> _Outcome:
        """Run, then check the workspace; restart the worker if a limit was hit or it died."""
        before = wsp.scan(self.workspace)
        self._removed = []
        notes: list[str] = []
        outcome = self._execute_thawed(step, code, responder)
        if outcome.restart_reason == _GONE_BEFORE_STEP:
            # The worker died after the previous step (a background thread, a closed channel): start
            # a new one and run this step there, telling the model its earlier state is gone.
            self._restart(_GONE_BEFORE_STEP)
            notes.append(obs.RESTARTED_BEFORE_NOTE)
            outcome = self._execute_thawed(step, code, responder)
            if outcome.restart_reason == _GONE_BEFORE_STEP:
                outcome.result.error = obs.lost_worker_error()
        self._sanitize()
        notes += [obs.removed_note(rel) for rel in dict.fromkeys(self._removed)]
        after = wsp.scan(self.workspace)
        result = outcome.result
        full = self._quota[0].exhausted() if self._quota[0] is not None else None
        if after.total_bytes > self.limits.workspace_bytes or after.inodes > self.limits.workspace_inodes or full:
            gone = wsp.remove_new_files(self.workspace, before, after)
            result.limit_hit = "workspace"
            result.error = obs.workspace_error(self.limits, after.total_bytes, len(gone), inodes=after.inodes, full=full)
            outcome.restart_reason = outcome.restart_reason or "workspace"
            after = wsp.scan(self.workspace)
        result.new_files = wsp.changed_files(before, after)
        if notes:
            sep = "\n" if result.stdout and not result.stdout.endswith("\n") else ""
            result.stdout = f"{result.stdout}{sep}" + "\n".join(notes) + "\n"
        if outcome.restart_reason is not None:
            self._restart(outcome.restart_reason)
            result.restarted = True
        return outcome

    # --- freezing: the sandbox runs only during its steps (see mmat.sandbox.modes / _launcher.Freezer) ---
    def _execute_thawed(self, step: int, code: str, responder: Responder) -> _Outcome:
        """Continue the sandbox, run one step, stop it again: what the parent inspects after a step
        (files, images, quota) cannot change under it. A sandbox that cannot be stopped is restarted."""
        worker = self._holder[0]
        if worker is not None and worker.frozen:
            worker.thaw()
        ooms = worker.oom_kills() if worker is not None else 0
        outcome = self._execute(step, code, responder)
        if not self._freeze():
            outcome.restart_reason = outcome.restart_reason or "freeze_failed"
            outcome.result.error = outcome.result.error or obs.freeze_error()
        if worker is not None and outcome.result.limit_hit is None and worker.oom_kills() > ooms:
            # a process of the sandbox was killed for the whole sandbox's memory (cgroup), not the worker itself
            outcome.result.limit_hit = "memory"
            outcome.result.error = outcome.result.error or obs.limit_error(self.limits, "memory")
            outcome.restart_reason = outcome.restart_reason or "memory"
        return outcome

    def _freeze(self) -> bool:
        """False only when a live sandbox could not be stopped."""
        worker = self._holder[0]
        if worker is None or worker.freeze():
            return True
        return worker.exit_info is not None or worker.proc.poll() is not None

    def _execute(self, step: int, code: str, responder: Responder) -> _Outcome:
        """Talk to the worker for one step. Every failure mode ends in an _Outcome, never a hang."""
        worker = self._holder[0]
        if worker is None:
            raise SandboxError("the sandbox has no worker (a restart failed earlier): create a new Sandbox.")
        t0 = time.monotonic()
        deadline = t0 + self.limits.wall_s
        calls: list[ToolCall] = []
        recorded: list[_RecordedTool] = []

        def failed(kind: str | None, error: StepError, reason: str) -> _Outcome:
            ms = (time.monotonic() - t0) * 1000
            return _Outcome(StepResult(error=error, tool_calls=calls, duration_ms=ms, limit_hit=kind), recorded, reason)

        try:
            worker.send({"op": "run", "step": step, "code": code}, deadline)
        except WorkerGone:
            return _Outcome(StepResult(), restart_reason=_GONE_BEFORE_STEP)
        except ChannelTimeout:
            return failed("wall_time", obs.limit_error(self.limits, "wall_time"), "wall_time")
        try:
            while True:
                msg = worker.recv(deadline)
                if isinstance(msg, ToolMsg):
                    t_tool = time.monotonic()
                    # nothing of the sandbox runs while the parent serves a tool: what it reads stays put
                    if not worker.freeze():
                        return failed(None, obs.freeze_error(), "freeze_failed")
                    try:
                        reply, call, rec = responder(msg, len(calls))
                    finally:
                        worker.thaw()
                    calls.append(call)
                    recorded.append(rec)
                    deadline += time.monotonic() - t_tool  # the parent's tool time is not the step's time
                    worker.send(reply, deadline)
                elif isinstance(msg, DoneMsg):
                    if msg.step < step:
                        # the real 'done' of an earlier step whose result the step's code forged:
                        # stale, not a broken channel; this step's own answer follows
                        continue
                    if msg.step != step:
                        raise ProtocolViolation(f"'done' for step {msg.step}, expected {step}")
                    return self._finished(msg, calls, recorded, (time.monotonic() - t0) * 1000)
                else:
                    raise ProtocolViolation(f"unexpected {msg.op!r} message during a step")
        except ChannelTimeout:
            return failed("wall_time", obs.limit_error(self.limits, "wall_time"), "wall_time")
        except _TooManyToolCalls:
            return failed("tool_calls", obs.limit_error(self.limits, "tool_calls"), "tool_calls")
        except ProtocolViolation as e:
            return failed(None, obs.protocol_error(str(e)), "protocol")
        except WorkerGone:
            info = worker.wait_exit()
            kind, error = obs.death_error(self.limits, info.signal, info.code, info.cpu_s)
            if kind is None and worker.oom_kills() > 0:  # the whole sandbox went over its cgroup memory limit
                kind, error = "memory", obs.limit_error(self.limits, "memory")
            return failed(kind, error, kind or "worker_exit")
        except _ToolHostFailure as failure:
            self._restart("tool_host_error")
            raise failure.error from failure.error.__cause__

    def _finished(self, msg: DoneMsg, calls: list[ToolCall], recorded: list[_RecordedTool], ms: float) -> _Outcome:
        # model-controlled text: control characters and ANSI escapes made visible (mmat.sandbox.escape)
        error = StepError(**escape_value(msg.error.model_dump())) if msg.error else None
        reason = None
        if msg.limit is not None and error is not None:
            reason = msg.limit
            error.message = f"{error.message} ({obs.limit_text(self.limits, msg.limit)}; the sandbox was restarted)"
        stdout = escape_text(obs.step_stdout(msg))
        if msg.tampered:  # the worker's own code was changed: restart it from its read-only file
            reason = reason or "tampered"
            stdout += ("\n" if stdout and not stdout.endswith("\n") else "") + obs.tampered_note(escape_text(msg.tampered)) + "\n"
        result = StepResult(
            stdout=stdout,
            final_answer=escape_value(msg.final_answer),
            has_final_answer=msg.has_final_answer,
            error=error,
            tool_calls=calls,
            duration_ms=ms,
            limit_hit=msg.limit,
        )
        return _Outcome(result, recorded, reason)

    # --- tools ----------------------------------------------------------------------------------
    def _live_tool(self, msg: ToolMsg, index: int) -> tuple[dict[str, Any], ToolCall, _RecordedTool]:
        """Serve one tool call through the host; failures go back to the code as ToolError."""
        if index >= self.limits.max_tool_calls:
            raise _TooManyToolCalls()
        known = {t["name"] for t in self._tool_specs}
        t0 = time.perf_counter()
        refused = _refuse_arguments(msg)
        if self.tools is None or msg.name not in known:
            error = f"unknown tool {escape_text(msg.name)!r}; available: {', '.join(sorted(known)) or 'none'}"
            reply = {"op": "tool_result", "ok": False, "error": error}
        elif refused is not None:
            reply = {"op": "tool_result", "ok": False, "error": f"{msg.name}: {refused}"}
        else:
            self._sanitize()
            try:
                result = self.tools.call(msg.name, scrub_surrogates(dict(msg.kwargs)))
                reply = {"op": "tool_result", "ok": True, "result": result if isinstance(result, str) else str(result)}
            except Exception as e:
                if not obs.is_model_facing(e):
                    raise _ToolHostFailure(e) from e
                reply = {"op": "tool_result", "ok": False, "error": str(e) or f"{msg.name} failed"}
            self._sanitize()
        call = ToolCall(  # the record (store, model, terminal): control characters escaped
            name=escape_text(msg.name),
            arguments=escape_value(dict(msg.kwargs)) if refused is None else {"arguments": f"<not recorded: {refused}>"},
            result=escape_text(reply.get("result", "")[: self.limits.max_output_chars]),
            duration_ms=(time.perf_counter() - t0) * 1000,
            error=None if reply["ok"] else escape_text(f"ToolError: {reply['error']}"),
        )
        return reply, call, _RecordedTool(msg.name, dict(msg.kwargs), reply)

    def _tools_for(self, dst: Path) -> ToolHost | None:
        if self.tools is None:
            return None
        rebind = getattr(self.tools, "for_workspace", None)
        if callable(rebind):
            return rebind(dst)  # type: ignore[no-any-return]
        raise ConfigError(
            f"cannot fork: the tool host {type(self.tools).__name__} is bound to {self.workspace}; pass "
            "fork(tools=<host bound to the fork's workspace>) or give the host a for_workspace(path) method."
        )

    @staticmethod
    def _describe_tools(tools: ToolHost | None) -> list[dict[str, Any]]:
        if tools is None:
            return []
        specs = []
        signature = getattr(tools, "signature", None)
        for name in tools.names():
            if name in _RESERVED_NAMES:
                continue
            if not name.isidentifier():
                raise ConfigError(f"tool name {name!r} is not a Python identifier: sandboxed code could not call it.")
            params = list(signature(name)) if callable(signature) else None
            specs.append({"name": name, "params": params})
        return specs

    # --- fork replay ----------------------------------------------------------------------------
    def _replay(self, history: list[_Executed]) -> bool:
        """Re-run history in this (fresh) sandbox; True if anything came out differently."""
        diverged = False
        replayed: list[_Executed] = []
        for entry in history:
            queue = list(entry.tools)

            def respond(msg: ToolMsg, index: int, queue: list[_RecordedTool] = queue) -> tuple[dict[str, Any], ToolCall, _RecordedTool]:
                nonlocal diverged
                if queue and queue[0].name == msg.name and queue[0].kwargs == msg.kwargs:
                    rec = queue.pop(0)
                    call = ToolCall(name=rec.name, arguments=rec.kwargs, result=str(rec.reply.get("result", "")), error=rec.reply.get("error"))
                    return rec.reply, call, rec
                diverged = True
                return self._live_tool(msg, index)

            outcome = self._run_step(entry.step, entry.code, respond)
            error_type = outcome.result.error.type if outcome.result.error else None
            if outcome.restart_reason is not None:
                diverged, replayed = True, []  # the replayed state is gone with the restart
                continue
            if error_type != entry.error_type or queue:
                diverged = True
            replayed.append(entry)
        self._history = replayed
        return diverged

    # --- helpers --------------------------------------------------------------------------------
    def _sanitize(self) -> list[str]:
        quota = self._quota[0]
        if isinstance(quota, NamespaceTmpfs):
            quota.unlock()
        removed = wsp.sanitize(self.workspace)
        self._removed.extend(removed)
        return removed

    def _event(self, event: str, **data: Any) -> dict[str, Any]:
        return {"event": event, "at": time.time(), "workspace": str(self.workspace), **data}
