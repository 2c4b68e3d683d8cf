"""A sandbox worker started ahead of need, bound to no workspace yet (mmat.sandbox.pool keeps them).

The worker runs (namespaces built, mounts made, cgroups joined, Python waiting for its ``init``) with
a private directory of its own as ``/workspace``; ``adopt(workspace)`` then makes that directory
the trajectory's workspace, at the workspace's own path, so the parent, its tools and the worker
see the same files, as for a sandbox started cold:

* **root mode**: the worker's ``/workspace`` is the quota tmpfs (quota.py) on its staging directory;
  adopt() copies the workspace's files into it and mounts it over the workspace.
* **rootless mode** (no mounts on the host): it is a directory the pool made next to the
  workspaces; adopt() moves the workspace's entries into it (rename, same filesystem) and renames
  it over the now empty workspace directory. A bind mount follows the directory, not its name.

No model code has run in a warm worker: what adopt() moves or copies is the caller's own files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mmat.errors import SandboxError
from mmat.sandbox.limits import Limits
from mmat.sandbox.process import WorkerProcess, allocate_uid
from mmat.sandbox.quota import WorkspaceTmpfs

__all__ = ["WarmWorker"]


@dataclass
class WarmWorker:
    """One pre-started worker. Create with WarmWorker.start(); then adopt() once, or destroy()."""

    mode: str  # "root" | "rootless" (mmat.sandbox.modes)
    limits: Limits
    uid: int
    worker: WorkerProcess
    quota: WorkspaceTmpfs | None  # root mode: the tmpfs that is the worker's /workspace
    place: Path | None  # rootless mode: the directory that is the worker's /workspace
    started_at: float
    used: bool = False

    @classmethod
    def start(cls, mode: str, limits: Limits, *, places: Path) -> WarmWorker:
        """A worker waiting for its init; rootless mode puts its directory in ``places`` (which must
        be on the filesystem of the workspaces it will adopt)."""
        uid = allocate_uid()
        quota: WorkspaceTmpfs | None = None
        place: Path | None = None
        if mode == "root":
            quota = WorkspaceTmpfs.create(limits, uid=uid, gid=uid)
            where = quota.staging
        else:
            place = Path(tempfile.mkdtemp(prefix="slot-", dir=places))
            where = place
        try:
            worker = WorkerProcess.launch(where, limits, uid=uid, rootless=mode == "rootless")
        except BaseException:
            if quota is not None:
                quota.release(keep=False)
            if place is not None:
                shutil.rmtree(place, ignore_errors=True)
            raise
        return cls(mode, limits, uid, worker, quota, place, time.monotonic())

    def alive(self) -> bool:
        return not self.used and self.worker.exit_info is None and self.worker.proc.poll() is None

    def adopt(self, workspace: Path) -> WorkspaceTmpfs | None:
        """Make the worker's /workspace hold ``workspace``'s files, at its path (the quota tmpfs in
        root mode, to be released by the sandbox). SandboxError: this worker cannot be used (the
        workspace is as it was; destroy() the worker)."""
        if not self.alive():
            raise SandboxError("the warm sandbox worker is gone or was used already")
        self.used = True
        if self.quota is not None:
            self.quota.attach(workspace, self.limits)
            return self.quota
        assert self.place is not None
        _move_in(workspace, self.place)
        self.place = None  # it is the workspace now
        return None

    def destroy(self) -> None:
        """Take the worker down and remove what it had (for a worker never adopted, or one whose adopt() failed)."""
        self.worker.kill()
        if self.quota is not None and self.quota.workspace == self.quota.staging:
            self.quota.release(keep=False)
        if self.place is not None:
            shutil.rmtree(self.place, ignore_errors=True)
            self.place = None


def _move_in(workspace: Path, place: Path) -> None:
    """Rootless adoption: workspace's entries into place, then place renamed over the empty workspace."""
    try:
        same = os.stat(workspace).st_dev == os.stat(place).st_dev
    except OSError as e:
        raise SandboxError(f"cannot use a warm sandbox for {workspace}: {e.strerror}") from None
    if not same:
        raise SandboxError(f"the warm sandboxes live on another filesystem than {workspace}")
    src = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    dst = os.open(place, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    moved: list[str] = []
    try:
        try:
            for name in os.listdir(src):
                os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)  # links move as links: nothing is followed
                moved.append(name)
            os.chmod(dst, os.stat(src).st_mode & 0o7777)
            os.rename(place, workspace)  # replaces the now empty directory in one step
        except OSError as e:
            for name in moved:
                os.rename(name, name, src_dir_fd=dst, dst_dir_fd=src)
            raise SandboxError(f"cannot move {workspace} into a warm sandbox: {e.strerror}") from None
    finally:
        os.close(src)
        os.close(dst)
