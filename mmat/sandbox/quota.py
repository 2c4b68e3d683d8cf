"""The workspace quota enforced while a step runs: the workspace is a tmpfs of
``Limits.workspace_mb`` bytes and ``Limits.workspace_inodes`` entries for the sandbox's life.

Root mode (WorkspaceTmpfs): a tmpfs is mounted on a private staging directory (root-only, in the system temp dir), the
workspace's files are copied into it, and it is bound over the workspace directory, so the parent,
its tools and the sandbox all see it at the workspace's own path. Writes beyond either limit fail
with ENOSPC inside the step; the parent's after-step check then deletes what the step created and
restarts the worker, as for any limit. On close the workspace is unmounted and its files are
mirrored back into the directory underneath, so callers find them where they always were.

While it is mounted the workspace lives in RAM; what the sandbox writes counts toward its memory
cgroup. If the parent dies without closing the sandbox (even by SIGKILL), a keeper process
(``_quota_keeper.py``, one per parent, in its own session) sees its pipe close and takes the mounts
down the same way, files restored to the directory underneath. So that no kill can leave a mount or
a staging directory it does not know of, it is told of each one *before* it is made (and of its end
only after), and a workspace that still has a quota on it (a killed process's, until its keeper is
done) is waited for, never mounted over.
Rootless mode cannot mount on the host; its launcher mounts the tmpfs inside the sandbox's own mount
namespace instead and hands the parent its fd (NamespaceTmpfs, at the end of this file).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import time
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from mmat.errors import SandboxError
from mmat.sandbox import safefs
from mmat.sandbox import workspace as wsp
from mmat.sandbox.limits import MIB, Limits

__all__ = ["WorkspaceTmpfs", "NamespaceTmpfs", "mount_fs"]

MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
MNT_DETACH = 2
# Free space below which the tmpfs counts as full (a write of this much would already have failed).
_FULL_BYTES = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount_fs(source: str | None, target: Path | str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2) through libc; an OSError naming source and target when it fails."""
    enc = (lambda s: None if s is None else s.encode())  # noqa: E731
    if _libc.mount(enc(source), str(target).encode(), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


_KEEPER = Path(__file__).with_name("_quota_keeper.py")
_keeper_lock = threading.Lock()
_keeper: subprocess.Popen[bytes] | None = None
# What the keeper must take down if this process dies: workspace (or staging) -> staging, in the
# order mounted. A keeper started anew (the last one died) is told all of it again.
_live: dict[str, str] = {}
# How long attach() waits for a quota mount left on a workspace by a killed mmat process (its
# keeper takes it down within a second) before refusing to stack another one on it.
LEFTOVER_WAIT_S = 5.0


def _start_keeper() -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(_KEEPER)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd="/", close_fds=True,
            start_new_session=True,  # a signal to our process group must not take it down with us
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )  # fmt: skip
    except OSError as e:
        raise SandboxError(f"cannot start the workspace quota keeper ({e}): check that {sys.executable} runs.") from None


def _tell_keeper(op: str, workspace: Path, staging: Path | None = None) -> None:
    """Tell this process's keeper (see _quota_keeper.py) about a mount: "add" *before* it is made,
    "del" once it is gone. Starts the keeper on first use, and again (with every live entry) if it died."""
    global _keeper
    with _keeper_lock:
        if op == "add":
            _live.pop(str(workspace), None)
            _live[str(workspace)] = str(staging)
        else:
            _live.pop(str(workspace), None)
        lines = [{"op": op, "workspace": str(workspace), **({"staging": str(staging)} if staging else {})}]
        for attempt in range(2):  # a keeper that died (and is not reaped yet) shows as a broken pipe
            if attempt or _keeper is None or _keeper.poll() is not None:
                if op == "del" and not _live:
                    return  # nothing for a new keeper to do
                _keeper = _start_keeper()
                lines = [{"op": "add", "workspace": ws, "staging": st} for ws, st in _live.items()]
            assert _keeper.stdin is not None
            try:
                _keeper.stdin.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
                _keeper.stdin.flush()
                return
            except OSError:
                continue
        if op == "add":
            _live.pop(str(workspace), None)  # the caller does not make this mount
            raise SandboxError("the workspace quota keeper cannot be told about a new mount: it exits at once; check that "
                               f"{sys.executable} runs.")


def _after_fork_in_child() -> None:
    """A forked child has its own mounts (if any) and its own keeper, never the parent's."""
    global _keeper, _keeper_lock
    _keeper_lock = threading.Lock()
    if _keeper is not None and _keeper.stdin is not None:
        try:
            _keeper.stdin.close()  # our copy of the pipe would keep the parent's keeper from seeing its EOF
        except OSError:
            pass
    _keeper = None
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _quota_mounted_at(path: Path) -> bool:
    """Whether a workspace quota tmpfs (source "mmat-workspace") sits on path."""
    want = str(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) > 4 and len(tail) > 1 and _unescape(fields[4]) == want and tail[0] == "tmpfs" and tail[1] == "mmat-workspace":
                return True
    return False


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class WorkspaceTmpfs:
    """A mounted workspace quota. Create with WorkspaceTmpfs.mount(); release() exactly once."""

    def __init__(self, workspace: Path, staging: Path) -> None:
        self.workspace = workspace
        self.staging = staging
        self.released = False

    @classmethod
    def mount(cls, workspace: Path, limits: Limits, *, uid: int, gid: int) -> WorkspaceTmpfs:
        quota = cls.create(limits, uid=uid, gid=gid)
        quota.attach(workspace, limits)
        return quota

    @classmethod
    def create(cls, limits: Limits, *, uid: int, gid: int) -> WorkspaceTmpfs:
        """The tmpfs alone, on its staging directory, not yet over any workspace (a warm pool's
        sandboxes start on it; attach() puts it over the workspace a trajectory gets)."""
        opts = f"size={limits.workspace_bytes},nr_inodes={limits.workspace_inodes + 1},mode=0700,uid={uid},gid={gid}"
        staging = _new_staging()
        quota = cls(staging, staging)
        try:
            mount_fs("mmat-workspace", staging, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        except OSError as e:
            quota._drop()
            raise SandboxError(f"cannot mount a workspace quota (a tmpfs): {e.strerror}") from None
        return quota

    def attach(self, workspace: Path, limits: Limits) -> None:
        """Copy the workspace's files into the tmpfs, then mount the tmpfs over the workspace."""
        try:
            _wait_for_leftover(workspace)
            wsp.copy_tree(workspace, self.staging)
        except OSError as e:
            self._drop()
            if e.errno == errno.ENOSPC:
                raise _inputs_do_not_fit(workspace, limits) from None
            raise
        except SandboxError:
            self._drop()
            raise
        try:
            # the keeper hears of the bind first: a kill before it is made restores the same files
            _tell_keeper("add", workspace, self.staging)
            _tell_keeper("del", self.staging)
            mount_fs(str(self.staging), workspace, None, MS_BIND)
        except OSError as e:
            self._forget(workspace)
            raise SandboxError(f"cannot mount the workspace quota on {workspace}: {e.strerror}") from None
        except SandboxError:
            self._forget(workspace)
            raise
        self.workspace = workspace

    def exhausted(self) -> str | None:
        """"bytes" or "inodes" when the tmpfs is (nearly) full, else None."""
        return _full(os.statvfs(self.staging))

    def release(self, *, keep: bool = True) -> None:
        """Unmount the workspace and (keep) mirror its files into the directory underneath; the
        sandbox is gone. keep=False: the caller deletes the workspace anyway."""
        if self.released:
            return
        self.released = True
        if self.workspace != self.staging:
            _umount(self.workspace)
        try:
            if keep and self.workspace != self.staging:
                wsp.mirror(self.staging, self.workspace)
        finally:
            self._forget(self.workspace)

    def _forget(self, workspace: Path) -> None:
        """Take the tmpfs down and, only then, strike it from the keeper's list."""
        self._drop()
        try:
            _tell_keeper("del", workspace)
        except SandboxError:
            pass  # a keeper that is gone has nothing left to take down

    def _drop(self) -> None:
        _umount(self.staging)
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.workspace == self.staging:
            try:
                _tell_keeper("del", self.staging)
            except SandboxError:
                pass


def _full(st: os.statvfs_result) -> str | None:
    if st.f_favail == 0:
        return "inodes"
    if st.f_bavail * st.f_frsize < _FULL_BYTES:
        return "bytes"
    return None


def _inputs_do_not_fit(workspace: Path, limits: Limits) -> SandboxError:
    have = wsp.scan(workspace)
    return SandboxError(
        f"the files already in {workspace} ({have.total_bytes / MIB:.1f} MiB, {have.inodes} entries) do not fit "
        f"its quota of {limits.workspace_mb} MiB and {limits.workspace_inodes} entries: raise Limits.workspace_mb "
        "/ workspace_inodes or pass fewer inputs."
    )


def _new_staging() -> Path:
    """A new root-only directory in the system temp dir, announced to the keeper *before* it exists:
    a kill at any moment leaves nothing the keeper does not know of."""
    tmp = Path(tempfile.gettempdir()).resolve()
    while True:
        staging = tmp / f"mmat-workspace-{secrets.token_hex(6)}"
        _tell_keeper("add", staging, staging)
        try:
            staging.mkdir(mode=0o700)
            return staging
        except FileExistsError:
            _tell_keeper("del", staging)  # not ours (a clash of random names): another one
        except OSError as e:
            _tell_keeper("del", staging)
            raise SandboxError(f"cannot create a staging directory for the workspace quota in {tmp}: {e.strerror}") from None


def _wait_for_leftover(workspace: Path) -> None:
    """A quota mount already on the workspace is another sandbox's, or one a killed mmat process left
    for its keeper, which takes it down within a second: wait that long, never stack on it."""
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while _quota_mounted_at(workspace):
        if time.monotonic() > deadline:
            raise SandboxError(
                f"{workspace} already has a workspace quota mounted on it (another open sandbox on the same directory, or "
                f"one left by an mmat process that was killed): close that sandbox, or run `umount -l {workspace}`."
            )
        time.sleep(0.05)


class NamespaceTmpfs:
    """Rootless mode's workspace quota: a tmpfs of ``workspace_mb`` / ``workspace_inodes`` that the
    sandbox's launcher mounted on /workspace inside the sandbox's own mount namespace, held by the
    parent as an open fd of its root (sent over SCM_RIGHTS; see _launcher.mount_workspace_tmpfs).

    The host directory does not show it, so while the sandbox is open the parent reaches the
    workspace only through that fd: attach() copies the directory's files in and registers the fd
    with safefs.redirect(), so every safefs.root() of the workspace (scans, hygiene, tools, step
    images) opens the tmpfs. A restarted worker brings a new tmpfs: move_to() copies the files across.
    release() ends the redirect and mirrors the tmpfs into the directory (fd walks, regular files and
    directories only, never following a link). The open fd keeps the tmpfs alive after its namespace
    is gone; if the parent dies, nothing holds it any more and it is freed: the directory then holds
    what it held when the sandbox started (README, "What does not hold").
    """

    def __init__(self, fd: int, workspace: Path, at_start: wsp.Snapshot) -> None:
        self.fd = fd
        self.workspace = workspace
        self.at_start = at_start  # the directory's files when the sandbox took them
        self.released = False

    @classmethod
    def attach(cls, fd: int, workspace: Path, limits: Limits) -> NamespaceTmpfs:
        """The workspace's files copied into the tmpfs behind ``fd`` (taken over: closed on failure)."""
        try:
            at_start = wsp.scan(workspace)
            wsp.copy_tree(workspace, fd)
        except OSError as e:
            os.close(fd)
            if e.errno == errno.ENOSPC:
                raise _inputs_do_not_fit(workspace, limits) from None
            raise
        quota = cls(fd, workspace, at_start)
        safefs.redirect(workspace, fd)
        return quota

    def move_to(self, fd: int) -> None:
        """A restarted worker's fresh tmpfs: the files (what the last step left) go there."""
        try:
            wsp.copy_tree(self.fd, fd)
        except BaseException:
            os.close(fd)
            raise
        old, self.fd = self.fd, fd
        safefs.redirect(self.workspace, fd)
        os.close(old)

    def exhausted(self) -> str | None:
        """"bytes" or "inodes" when the tmpfs is (nearly) full, else None."""
        return _full(os.fstatvfs(self.fd))

    def unlock(self) -> None:
        """Give the tmpfs's root back its mode: the sandbox (the same uid as the parent here) may have
        chmod-ed it to 000, which would lock the parent out of it; root mode's parent is not stopped by modes."""
        os.fchmod(self.fd, 0o700)

    def release(self, *, keep: bool = True) -> None:
        """The workspace path is the directory again; (keep) the tmpfs's files are mirrored into it.
        Files someone wrote into the directory by path meanwhile (the sandbox never saw them) stay."""
        if self.released:
            return
        self.released = True
        safefs.unredirect(self.workspace)
        try:
            if keep:
                wsp.mirror(self.fd, self.workspace, since=self.at_start)
        finally:
            os.close(self.fd)
