"""One sandbox worker as seen from the parent: spawn it, talk to it, kill it.

The parent never trusts the worker: every read has a deadline, every write too (a worker that stops
reading cannot block the parent on a full pipe), lines are size-capped and validated, and the
launcher (root, outside the sandbox's PID namespace) reports how the worker ended.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.errors import SandboxError
from mmat.sandbox.cgroups import SandboxCgroup
from mmat.sandbox.limits import Limits
from mmat.sandbox.protocol import MAX_LINE_BYTES, ProtocolViolation, ReadyMsg, parse_worker_message
from mmat.sandbox.runtime import PYTHON_FLAGS, launcher_config, launcher_source, worker_imports, worker_source

__all__ = ["WorkerProcess", "WorkerGone", "ChannelTimeout", "ExitInfo", "Launcher", "allocate_uid", "launch_method"]

# The launcher is started with -c: it reads its own code (length-prefixed) from stdin, then its config.
_BOOTSTRAP = "import sys;n=int(sys.stdin.buffer.readline());exec(compile(sys.stdin.buffer.read(n),'mmat-sandbox-launcher','exec'))"
# uids for sandboxes: a random one per worker from a range no distribution hands out to users, so
# RLIMIT_NPROC (counted per uid) is private to the sandbox and two sandboxes never share an owner.
UID_RANGE = (1_000_000_000, 2_000_000_000)
# How long the parent waits for the launcher to report after a kill before killing the launcher itself.
KILL_GRACE_S = 3.0
# How long the parent waits for a freeze/thaw report (the launcher itself gives up after 2 s).
CONTROL_WAIT_S = 5.0


def allocate_uid() -> int:
    return UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])


def _wait_fd(fd: int, events: int, timeout_s: float) -> bool:
    """poll() one fd (select() fails for fd numbers >= 1024, which a busy parent reaches)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))


class WorkerGone(Exception):
    """The worker's channel closed: it exited, crashed or was killed."""


class ChannelTimeout(Exception):
    """The deadline passed while waiting on the worker."""


@dataclass
class ExitInfo:
    """How a worker ended, as the launcher saw it."""

    event: str = "unknown"  # exit (on its own) | stopped (we killed it) | unknown
    code: int | None = None
    signal: int | None = None
    cpu_s: float = 0.0
    maxrss_kb: int = 0


_LAUNCHER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
# How long the parent waits for the zygote to fork a launcher (it takes milliseconds).
_ZYGOTE_ANSWER_S = 30.0


class Launcher:
    """The launcher process of one sandbox, as the parent holds it: its stdin (commands), stdout
    (status lines) and stderr as pipes, and a way to poll, wait for and kill it. Forked by the
    zygote (a pidfd stands for it) or, where there is none, started with subprocess."""

    def __init__(self, stdin: int, stdout: int, stderr: int, *, pidfd: int | None = None, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.stdin = os.fdopen(stdin, "wb", buffering=0)
        self.stdout = os.fdopen(stdout, "rb", buffering=0)
        self.stderr = os.fdopen(stderr, "rb", buffering=0)
        for f in (self.stdout, self.stderr):
            os.set_blocking(f.fileno(), False)
        self._pidfd = pidfd
        self._popen = popen
        self._exited = False

    def poll(self) -> int | None:
        """None while the launcher runs; else its exit status (0 when the zygote reaped it)."""
        if self._popen is not None:
            return self._popen.poll()
        if not self._exited and self._pidfd is not None and _wait_fd(self._pidfd, select.POLLIN, 0):
            self._exited = True
        return 0 if self._exited or self._pidfd is None else None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the launcher to exit (TimeoutError after ``timeout`` seconds)."""
        if self._popen is not None:
            try:
                return self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"the sandbox launcher did not exit within {timeout} s") from None
        if self._pidfd is not None and not self._exited:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else max(0.0, timeout) * 1000):  # readable: it exited
                raise TimeoutError(f"the sandbox launcher did not exit within {timeout} s")
            self._exited = True
        return 0

    def kill(self) -> None:
        """SIGKILL the launcher (its init and worker die with it: PDEATHSIG)."""
        if self._popen is not None:
            self._popen.kill()
        elif self._pidfd is not None and not self._exited:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Close the pipes (and the pidfd once the launcher is gone)."""
        for f in (self.stdin, self.stdout, self.stderr):
            try:
                f.close()
            except OSError:
                pass
        if self._pidfd is not None:
            if not self._exited:
                self.poll()
            if self._exited:  # a pidfd of a live launcher stays: kill() and wait() still need it
                os.close(self._pidfd)
                self._pidfd = None

    def __del__(self) -> None:
        if getattr(self, "_pidfd", None) is not None:
            try:
                os.close(self._pidfd)  # type: ignore[arg-type]
            except OSError:
                pass


class _Zygote:
    """One pre-imported launcher process per parent (mmat.sandbox._launcher.zygote_main): a new
    sandbox is a fork of it, not a fresh interpreter that imports everything again."""

    _lock = threading.Lock()
    _current: _Zygote | None = None
    _broken: str | None = None  # why no zygote can run here (the subprocess path is used instead)

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        child_fd = child_end.fileno()  # pass_fds keeps the number in the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *PYTHON_FLAGS, "-c", _BOOTSTRAP],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(child_fd,),
                env=_LAUNCHER_ENV, cwd="/", close_fds=True, start_new_session=True,
            )  # fmt: skip
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.sock = parent_end
        self.sock.settimeout(_ZYGOTE_ANSWER_S)  # a zygote that stops answering is replaced, never waited on forever
        self.owner = os.getpid()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        code = launcher_source()
        setup = {"zygote": True, "sock_fd": child_fd, "worker_source": worker_source(), "worker_imports": list(worker_imports())}
        try:
            self.proc.stdin.write(b"%d\n" % len(code) + code + json.dumps(setup).encode() + b"\n")
            self.proc.stdin.flush()
            ready = self.proc.stdout.readline() == b"ready\n"
        except OSError:
            ready = False
        if not ready:
            self.close()
            raise OSError("the sandbox zygote did not start")

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def spawn(self, cfg: dict[str, Any], fds: list[int]) -> tuple[int, int]:
        """Fork a launcher for cfg with fds (stdin, stdout, stderr, channel in, channel out[, workspace
        socket]): (pid, pidfd)."""
        request = json.dumps({k: v for k, v in cfg.items() if k != "worker_source"}).encode()
        socket.send_fds(self.sock, [request], fds)
        answer, got, _, _ = socket.recv_fds(self.sock, 256, 1)
        if not got:
            raise OSError(f"the sandbox zygote refused to start a launcher: {answer[:200]!r}")
        return int(answer), got[0]

    def close(self) -> None:
        self.sock.close()  # the zygote exits on EOF; launchers it forked keep running until told
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @classmethod
    def spawn_launcher(cls, cfg: dict[str, Any], fds: list[int]) -> tuple[int, int] | None:
        """(pid, pidfd) of a launcher forked by this process's zygote; None where no zygote works."""
        with cls._lock:
            if cls._broken is not None:
                return None
            if cls._current is None or not cls._current.alive():
                try:
                    cls._current = cls()
                except OSError as e:
                    cls._broken = str(e)
                    return None
                if not cls._registered:
                    atexit.register(cls.shutdown)
                    cls._registered = True
            try:
                return cls._current.spawn(cfg, fds)
            except OSError:  # the zygote died under us: one fresh one, then give up
                cls._current.close()
                cls._current = cls()
                return cls._current.spawn(cfg, fds)

    _registered = False

    @classmethod
    def _after_fork_in_child(cls) -> None:
        """A forked child of the parent gets its own zygote when it needs one, never the parent's."""
        cls._lock = threading.Lock()
        if cls._current is not None:
            cls._current.sock.close()
        cls._current = None

    @classmethod
    def shutdown(cls) -> None:
        with cls._lock:
            if cls._current is not None and cls._current.owner == os.getpid():
                cls._current.close()
            cls._current = None


os.register_at_fork(after_in_child=_Zygote._after_fork_in_child)


def launch_method() -> str:
    """How this process starts its sandboxes' launchers (for `mmat doctor`)."""
    if _Zygote._broken is not None:
        return f"one interpreter per sandbox (no zygote here: {_Zygote._broken})"
    return "forked by a pre-imported zygote (pidfd)" if _Zygote._current is not None else "not started yet"


def _spawn_launcher(cfg: dict[str, Any]) -> Launcher:
    """The launcher for cfg: forked by the zygote, or started with subprocess where there is none.
    Its first input is its config (subprocess: its code, then the config)."""
    pipes = [os.pipe() for _ in range(3)]  # (r, w) for stdin, stdout, stderr
    keep = {"stdin": pipes[0][1], "stdout": pipes[1][0], "stderr": pipes[2][0]}
    theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
    try:
        extra = [cfg["fd_sock"]] if cfg.get("fd_sock") is not None else []  # rootless: the workspace fd comes back on it
        spawned = _Zygote.spawn_launcher(cfg, [*theirs, *cfg["chan_fds"], *extra])
        if spawned is not None:
            pid, pidfd = spawned
            return Launcher(keep["stdin"], keep["stdout"], keep["stderr"], pidfd=pidfd)
        popen = subprocess.Popen(
            [sys.executable, *PYTHON_FLAGS, "-c", _BOOTSTRAP],
            stdin=theirs[0], stdout=theirs[1], stderr=theirs[2], pass_fds=(*cfg["chan_fds"], *extra),
            env=_LAUNCHER_ENV, cwd="/", close_fds=True,
            start_new_session=True,  # signals to the parent's process group do not reach sandboxes
        )  # fmt: skip
        launcher = Launcher(keep["stdin"], keep["stdout"], keep["stderr"], popen=popen)
        code = launcher_source()
        try:
            launcher.stdin.write(b"%d\n" % len(code) + code + json.dumps(cfg).encode() + b"\n")
        except BrokenPipeError:
            pass  # the launcher died at once; its stdout says why
        return launcher
    except BaseException:
        for fd in keep.values():
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)


def _receive_fd(sock: socket.socket, deadline: float) -> int | None:
    """The one fd the launcher sends over sock (SCM_RIGHTS), or None (closed, nothing, or too late)."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        _, fds, _, _ = socket.recv_fds(sock, 64, 1)
    except OSError:
        return None
    return fds[0] if fds else None


@dataclass
class WorkerProcess:
    """A running launcher + worker pair. Create with WorkerProcess.start()."""

    proc: Launcher
    to_worker: int
    from_worker: int
    uid: int
    worker_pid: int
    init_pid: int
    python: str
    start_ms: float
    _buf: bytearray = field(default_factory=bytearray)
    _status_buf: bytearray = field(default_factory=bytearray)
    exit_info: ExitInfo | None = None
    cgroup: SandboxCgroup | None = None
    workspace_fd: int | None = None  # rootless: the root of the workspace tmpfs in the sandbox's namespace (take_workspace_fd)
    frozen: bool = False
    last_control_us: float = 0.0  # what the last freeze took (in the launcher, for SIGSTOP freezing)
    _pending_thaws: int = 0  # thaw answers of the launcher not read yet

    # --- start --------------------------------------------------------------------------------
    @classmethod
    def start(cls, workspace: Path, limits: Limits, init: dict[str, Any], *, uid: int, rootless: bool = False) -> WorkerProcess:
        """Start a launcher + worker. rootless: build the sandbox in a new user namespace (mmat.sandbox.modes)."""
        t0 = time.perf_counter()
        wp = cls.launch(workspace, limits, uid=uid, rootless=rootless)
        wp.handshake(init, time.monotonic() + limits.start_timeout_s)
        wp.start_ms = (time.perf_counter() - t0) * 1000
        return wp

    @classmethod
    def launch(cls, workspace: Path | None, limits: Limits, *, uid: int, rootless: bool = False) -> WorkerProcess:
        """Build the sandbox up to a running worker that waits for its ``init`` (handshake()); a warm
        pool (mmat.sandbox.pool) keeps workers in this state. Root mode binds ``workspace`` at
        /workspace; rootless mode mounts a tmpfs there instead, whose fd is ``workspace_fd``."""
        t0 = time.perf_counter()
        cgroup = SandboxCgroup.create(memory_bytes=limits.memory_bytes, max_tasks=limits.max_processes, tag=str(uid))
        p2w_r, p2w_w = os.pipe()
        w2p_r, w2p_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if rootless else (None, None)
        cfg = launcher_config(workspace, limits, uid=uid, chan_fds=(p2w_r, w2p_w), rootless=rootless, cgroups=cgroup.launcher_spec())
        cfg["fd_sock"] = theirs.fileno() if theirs is not None else None
        try:
            proc = _spawn_launcher(cfg)
        except OSError as e:
            for fd in (p2w_r, p2w_w, w2p_r, w2p_w):
                os.close(fd)
            for sock in (ours, theirs):
                if sock is not None:
                    sock.close()
            cgroup.remove()
            raise SandboxError(f"cannot start the sandbox launcher ({e}): check that {sys.executable} runs.") from None
        os.close(p2w_r)
        os.close(w2p_w)
        if theirs is not None:
            theirs.close()
        os.set_blocking(p2w_w, False)
        os.set_blocking(w2p_r, False)
        deadline = time.monotonic() + limits.start_timeout_s
        wp = cls(proc, p2w_w, w2p_r, uid, worker_pid=0, init_pid=0, python="", start_ms=0.0, cgroup=cgroup)
        started = wp._read_status(deadline)
        if ours is not None:
            if started.get("event") == "started":
                wp.workspace_fd = _receive_fd(ours, deadline)
                if wp.workspace_fd is None:
                    started = {"event": "error", "message": "the launcher did not send its workspace tmpfs"}
            ours.close()
        if started.get("event") != "started":
            detail = started.get("message") or wp._stderr_tail() or "no output"
            wp.kill()
            how = "in a new user namespace (rootless mode)" if rootless else "as root"
            raise SandboxError(
                f"the sandbox could not start {how}: {detail}. `mmat doctor` says which sandbox mode this machine "
                "supports and what to change."
            )
        wp.worker_pid, wp.init_pid = int(started["worker_pid"]), int(started["init_pid"])
        wp.start_ms = (time.perf_counter() - t0) * 1000
        return wp

    def take_workspace_fd(self) -> int:
        """Rootless: the workspace tmpfs's root fd, now the caller's to close (mmat.sandbox.quota.NamespaceTmpfs)."""
        fd, self.workspace_fd = self.workspace_fd, None
        if fd is None:
            raise SandboxError("this sandbox worker has no workspace tmpfs (root mode, or taken already)")
        return fd

    def handshake(self, init: dict[str, Any], deadline: float) -> None:
        """Send the worker its ``init`` (tools, seed, limits) and wait for ``ready``; SandboxError
        (the sandbox taken down) when it does not answer properly."""
        try:
            self.send(init, deadline)
            msg = self.recv(deadline)
        except (WorkerGone, ChannelTimeout, ProtocolViolation) as e:
            tail = self._stderr_tail()
            self.kill()
            raise SandboxError(f"the sandbox worker did not start ({type(e).__name__}: {e}). {tail}".strip()) from None
        if not isinstance(msg, ReadyMsg):
            self.kill()
            raise SandboxError(f"the sandbox worker sent {msg.op!r} instead of 'ready' at start.")
        self.python = msg.python

    # --- channel --------------------------------------------------------------------------------
    def send(self, msg: dict[str, Any], deadline: float) -> None:
        """Write one JSON line; a worker that does not read in time is a timeout, never a hang."""
        # "replace": a lone surrogate (model-written code or text) becomes "?" instead of an exception here
        view = memoryview(json.dumps(msg, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout("the worker did not read its input in time")
            if not _wait_fd(self.to_worker, select.POLLOUT, remaining):
                continue
            try:
                n = os.write(self.to_worker, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as e:
                raise WorkerGone(f"the worker's input closed ({e})") from None
            view = view[n:]

    def recv(self, deadline: float):  # type: ignore[no-untyped-def]
        """Next validated message from the worker; WorkerGone on EOF, ChannelTimeout at the deadline."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return parse_worker_message(line)
            if len(self._buf) > MAX_LINE_BYTES:
                raise ProtocolViolation(f"a line longer than {MAX_LINE_BYTES} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout("no answer from the worker in time")
            if not _wait_fd(self.from_worker, select.POLLIN, remaining):
                continue
            try:
                chunk = os.read(self.from_worker, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                if self._buf:
                    raise ProtocolViolation(f"the channel closed in the middle of a line: {bytes(self._buf[:80])!r}")
                raise WorkerGone("the worker's channel closed")
            self._buf.extend(chunk)

    # --- launcher status ------------------------------------------------------------------------
    def _read_status(self, deadline: float) -> dict[str, Any]:
        """Next JSON line from the launcher's stdout ({} if it closed or the deadline passed)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            nl = self._status_buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._status_buf[:nl])
                del self._status_buf[: nl + 1]
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    return {"event": "error", "message": f"launcher said {line[:200]!r}"}
                return data if isinstance(data, dict) else {}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            if not _wait_fd(fd, select.POLLIN, remaining):
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return {}
            self._status_buf.extend(chunk)

    def _stderr_tail(self) -> str:
        assert self.proc.stderr is not None
        try:
            data = os.read(self.proc.stderr.fileno(), 65536)
        except (BlockingIOError, OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace")[-2000:].strip()

    @staticmethod
    def _exit_from(status: dict[str, Any]) -> ExitInfo:
        return ExitInfo(
            event=str(status.get("event", "unknown")),
            code=status.get("code"),
            signal=status.get("signal"),
            cpu_s=float(status.get("cpu_s") or 0.0),
            maxrss_kb=int(status.get("maxrss_kb") or 0),
        )

    def wait_exit(self, timeout_s: float = KILL_GRACE_S) -> ExitInfo:
        """How the worker ended (after its channel closed or after kill()); cached."""
        if self.exit_info is None:
            status = self._read_status(time.monotonic() + timeout_s)
            while status and status.get("event") not in ("exit", "stopped", "error"):
                status = self._read_status(time.monotonic() + timeout_s)
            self.exit_info = self._exit_from(status)
        return self.exit_info

    # --- freeze / thaw (every process of the sandbox, between steps) -----------------------------
    def freeze(self) -> bool:
        """Stop every process and thread of the sandbox; True once all of them are stopped. False: the
        sandbox is gone or could not be stopped in time (the caller restarts it). With a cgroup
        freezer the parent does it itself; else the sandbox's init does (SIGSTOP), via the launcher."""
        if self.exit_info is not None or self.proc.poll() is not None:
            return False
        if self.cgroup is not None and self.cgroup.freeze_kind is not None:
            t0 = time.perf_counter()
            ok = self.cgroup.freeze()
            self.last_control_us = (time.perf_counter() - t0) * 1e6
        else:
            ok = self._control("freeze", "frozen")
        self.frozen = ok
        return ok

    def thaw(self) -> bool:
        """Continue the sandbox. Does not wait: a SIGSTOP thaw's answer is collected before the next command."""
        if self.cgroup is not None and self.cgroup.freeze_kind is not None:
            self.cgroup.thaw()
            self.frozen = False
            return True
        ok = self._send_control("thaw")
        if ok:
            self._pending_thaws += 1
            self.frozen = False
        return ok

    def _send_control(self, cmd: str) -> bool:
        if self.exit_info is not None or self.proc.poll() is not None:
            return False
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def _control(self, cmd: str, want: str) -> bool:
        """Send a command to the launcher and wait for its answer (after the answers still owed)."""
        if not self._send_control(cmd):
            return False
        deadline = time.monotonic() + CONTROL_WAIT_S
        while True:
            status = self._read_status(deadline)
            event = status.get("event")
            if event in ("exit", "stopped", "error"):
                self.exit_info = self._exit_from(status)
                return False
            if event in ("thawed", "thaw_failed") and self._pending_thaws:
                self._pending_thaws -= 1
                continue
            if not status or event in (want, f"{cmd}_failed", f"{want}_failed"):
                break
        self.last_control_us = float(status.get("us") or 0.0)
        return event == want

    def oom_kills(self) -> int:
        """Processes of this sandbox the kernel killed for its cgroup memory limit (0 without one)."""
        return self.cgroup.oom_kills() if self.cgroup is not None else 0

    # --- stop -----------------------------------------------------------------------------------
    def kill(self) -> ExitInfo:
        """Take the whole sandbox down (every process in its PID namespace) and reap the launcher."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"kill\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            info = self.wait_exit() if self.worker_pid else ExitInfo()
            try:
                self.proc.wait(timeout=KILL_GRACE_S)
            except TimeoutError:
                self.proc.kill()  # init and worker have PDEATHSIG=SIGKILL: the namespace dies with it
                self.proc.wait()
        else:
            info = self.exit_info or self.wait_exit(0.0)
        self.close_fds()
        if self.cgroup is not None:
            self.cgroup.remove()
        return info

    def close_fds(self) -> None:
        if self.workspace_fd is not None:  # never taken: nobody else holds the tmpfs
            os.close(self.workspace_fd)
            self.workspace_fd = None
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to_worker = self.from_worker = -1
        self.proc.close()
