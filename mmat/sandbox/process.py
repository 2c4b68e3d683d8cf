"""One sandbox worker as seen from the parent: spawn it, talk to it, kill it.

The parent never trusts the worker: every read has a deadline, every write too (a worker that stops
reading cannot block the parent on a full pipe), lines are size-capped and validated, and the
launcher (root, outside the sandbox's PID namespace) reports how the worker ended.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.errors import SandboxError
from mmat.sandbox.cgroups import SandboxCgroup
from mmat.sandbox.limits import Limits
from mmat.sandbox.protocol import MAX_LINE_BYTES, ProtocolViolation, ReadyMsg, parse_worker_message
from mmat.sandbox.runtime import launcher_config

__all__ = ["WorkerProcess", "WorkerGone", "ChannelTimeout", "ExitInfo", "allocate_uid"]

_LAUNCHER = Path(__file__).with_name("_launcher.py")
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


@dataclass
class WorkerProcess:
    """A running launcher + worker pair. Create with WorkerProcess.start()."""

    proc: subprocess.Popen[bytes]
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
    frozen: bool = False
    last_control_us: float = 0.0  # what the last freeze took (in the launcher, for SIGSTOP freezing)
    _pending_thaws: int = 0  # thaw answers of the launcher not read yet

    # --- start --------------------------------------------------------------------------------
    @classmethod
    def start(cls, workspace: Path, limits: Limits, init: dict[str, Any], *, uid: int, rootless: bool = False) -> WorkerProcess:
        """Start a launcher + worker. rootless: build the sandbox in a new user namespace (mmat.sandbox.modes)."""
        t0 = time.perf_counter()
        cgroup = SandboxCgroup.create(memory_bytes=limits.memory_bytes, max_tasks=limits.max_processes, tag=str(uid))
        p2w_r, p2w_w = os.pipe()
        w2p_r, w2p_w = os.pipe()
        cfg = launcher_config(workspace, limits, uid=uid, chan_fds=(p2w_r, w2p_w), rootless=rootless, cgroups=cgroup.launcher_spec())
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(_LAUNCHER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(p2w_r, w2p_w),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd="/",
                close_fds=True,
                start_new_session=True,  # signals to the parent's process group do not reach sandboxes
            )
        except OSError as e:
            for fd in (p2w_r, p2w_w, w2p_r, w2p_w):
                os.close(fd)
            cgroup.remove()
            raise SandboxError(f"cannot start the sandbox launcher ({e}): check that {sys.executable} runs.") from None
        os.close(p2w_r)
        os.close(w2p_w)
        os.set_blocking(p2w_w, False)
        os.set_blocking(w2p_r, False)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        deadline = time.monotonic() + limits.start_timeout_s
        try:
            proc.stdin.write(json.dumps(cfg).encode() + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the launcher died at once; its stdout says why
        wp = cls(proc, p2w_w, w2p_r, uid, worker_pid=0, init_pid=0, python="", start_ms=0.0, cgroup=cgroup)
        started = wp._read_status(deadline)
        if started.get("event") != "started":
            detail = started.get("message") or wp._stderr_tail() or "no output"
            wp.kill()
            how = "in a new user namespace (rootless mode)" if rootless else "as root"
            raise SandboxError(
                f"the sandbox could not start {how}: {detail}. `mmat doctor` says which sandbox mode this machine "
                "supports and what to change."
            )
        wp.worker_pid, wp.init_pid = int(started["worker_pid"]), int(started["init_pid"])
        try:
            wp.send(init, deadline)
            msg = wp.recv(deadline)
        except (WorkerGone, ChannelTimeout, ProtocolViolation) as e:
            tail = wp._stderr_tail()
            wp.kill()
            raise SandboxError(f"the sandbox worker did not start ({type(e).__name__}: {e}). {tail}".strip()) from None
        if not isinstance(msg, ReadyMsg):
            wp.kill()
            raise SandboxError(f"the sandbox worker sent {msg.op!r} instead of 'ready' at start.")
        wp.python = msg.python
        wp.start_ms = (time.perf_counter() - t0) * 1000
        return wp

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
            except subprocess.TimeoutExpired:
                self.proc.kill()  # init and worker have PDEATHSIG=SIGKILL: the namespace dies with it
                self.proc.wait()
        else:
            info = self.exit_info or self.wait_exit(0.0)
        self.close_fds()
        if self.cgroup is not None:
            self.cgroup.remove()
        return info

    def close_fds(self) -> None:
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to_worker = self.from_worker = -1
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
