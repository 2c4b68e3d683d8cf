"""The workspace quota enforced while a step runs (root mode): the workspace is a tmpfs of
``Limits.workspace_mb`` bytes and ``Limits.workspace_inodes`` entries for the sandbox's life.

How: a tmpfs is mounted on a private staging directory (root-only, in the system temp dir), the
workspace's files are copied into it, and it is bound over the workspace directory, so the parent,
its tools and the sandbox all see it at the workspace's own path. Writes beyond either limit fail
with ENOSPC inside the step; the parent's after-step check then deletes what the step created and
restarts the worker, as for any limit. On close the workspace is unmounted and its files are
mirrored back into the directory underneath, so callers find them where they always were.

While it is mounted the workspace lives in RAM; what the sandbox writes counts toward its memory
cgroup. If the parent dies without closing the sandbox (even by SIGKILL), a keeper process
(``_quota_keeper.py``, one per parent, in its own session) sees its pipe close and takes the mounts
down the same way, files restored to the directory underneath.
Rootless mode cannot mount on the host: the quota is checked after each step only (documented in
the README).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from mmat.errors import SandboxError
from mmat.sandbox import workspace as wsp
from mmat.sandbox.limits import MIB, Limits

__all__ = ["WorkspaceTmpfs"]

MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
MNT_DETACH = 2
# Free space below which the tmpfs counts as full (a write of this much would already have failed).
_FULL_BYTES = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: str | None, target: Path, fstype: str | None, flags: int, data: str | None = None) -> None:
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


def _tell_keeper(msg: dict[str, str]) -> None:
    """Send one line to this process's keeper, starting it on first use (see _quota_keeper.py)."""
    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper.poll() is not None:
            try:
                _keeper = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", str(_KEEPER)],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd="/", close_fds=True,
                    start_new_session=True,  # a signal to our process group must not take it down with us
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                )  # fmt: skip
            except OSError as e:
                raise SandboxError(f"cannot start the workspace quota keeper ({e}): check that {sys.executable} runs.") from None
        assert _keeper.stdin is not None
        _keeper.stdin.write(json.dumps(msg).encode() + b"\n")
        _keeper.stdin.flush()


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
        staging = Path(tempfile.mkdtemp(prefix="mmat-workspace-"))
        opts = f"size={limits.workspace_bytes},nr_inodes={limits.workspace_inodes + 1},mode=0700,uid={uid},gid={gid}"
        try:
            _mount("mmat-workspace", staging, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        except OSError as e:
            staging.rmdir()
            raise SandboxError(f"cannot mount a workspace quota (a tmpfs): {e.strerror}") from None
        quota = cls(staging, staging)
        try:
            _tell_keeper({"op": "add", "workspace": str(staging), "staging": str(staging)})
        except (OSError, SandboxError):
            quota._drop()
            raise
        return quota

    def attach(self, workspace: Path, limits: Limits) -> None:
        """Copy the workspace's files into the tmpfs, then mount the tmpfs over the workspace."""
        try:
            wsp.copy_tree(workspace, self.staging)
        except OSError as e:
            self._drop()
            if e.errno == errno.ENOSPC:
                have = wsp.scan(workspace)
                raise SandboxError(
                    f"the files already in {workspace} ({have.total_bytes / MIB:.1f} MiB, {have.inodes} entries) do not fit "
                    f"its quota of {limits.workspace_mb} MiB and {limits.workspace_inodes} entries: raise Limits.workspace_mb "
                    "/ workspace_inodes or pass fewer inputs."
                ) from None
            raise
        try:
            _tell_keeper({"op": "add", "workspace": str(workspace), "staging": str(self.staging)})
            _tell_keeper({"op": "del", "workspace": str(self.staging)})
            _mount(str(self.staging), workspace, None, MS_BIND)
        except OSError as e:
            self._drop()
            raise SandboxError(f"cannot mount the workspace quota on {workspace}: {e.strerror}") from None
        except SandboxError:
            self._drop()
            raise
        self.workspace = workspace

    def exhausted(self) -> str | None:
        """"bytes" or "inodes" when the tmpfs is (nearly) full, else None."""
        st = os.statvfs(self.staging)
        if st.f_favail == 0:
            return "inodes"
        if st.f_bavail * st.f_frsize < _FULL_BYTES:
            return "bytes"
        return None

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
            self._drop()
            try:
                _tell_keeper({"op": "del", "workspace": str(self.workspace)})
            except (OSError, SandboxError):
                pass  # a keeper that is gone has nothing left to take down

    def _drop(self) -> None:
        _umount(self.staging)
        shutil.rmtree(self.staging, ignore_errors=True)
