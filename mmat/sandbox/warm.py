"""A sandbox worker started ahead of need, bound to no workspace yet (mmat.sandbox.pool keeps them).

The worker runs (namespaces built, mounts made, cgroups joined, Python waiting for its ``init``) on
an empty workspace quota tmpfs of its own as ``/workspace``; ``adopt(workspace)`` then fills it with
the trajectory's workspace's files and makes it that workspace, so the parent, its tools and the
worker see the same files, as for a sandbox started cold:

* **root mode**: the tmpfs (quota.py's WorkspaceTmpfs) is on its staging directory; adopt() copies
  the workspace's files into it and mounts it over the workspace.
* **rootless mode**: the tmpfs is in the worker's own mount namespace (quota.py's NamespaceTmpfs);
  adopt() copies the files in through its fd and redirects the workspace path to it.

No model code has run in a warm worker: what adopt() copies is the caller's own files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mmat.errors import SandboxError
from mmat.sandbox.limits import Limits
from mmat.sandbox.process import WorkerProcess, allocate_uid
from mmat.sandbox.quota import NamespaceTmpfs, WorkspaceTmpfs

__all__ = ["WarmWorker"]


@dataclass
class WarmWorker:
    """One pre-started worker. Create with WarmWorker.start(); then adopt() once, or destroy()."""

    mode: str  # "root" | "rootless" (mmat.sandbox.modes)
    limits: Limits
    uid: int
    worker: WorkerProcess
    quota: WorkspaceTmpfs | None  # root mode: the tmpfs that is the worker's /workspace
    started_at: float
    used: bool = False

    @classmethod
    def start(cls, mode: str, limits: Limits) -> WarmWorker:
        """A worker waiting for its init."""
        uid = allocate_uid()
        quota = WorkspaceTmpfs.create(limits, uid=uid, gid=uid) if mode == "root" else None
        try:
            worker = WorkerProcess.launch(quota.staging if quota is not None else None, limits, uid=uid, rootless=mode == "rootless")
        except BaseException:
            if quota is not None:
                quota.release(keep=False)
            raise
        return cls(mode, limits, uid, worker, quota, time.monotonic())

    def alive(self) -> bool:
        return not self.used and self.worker.exit_info is None and self.worker.proc.poll() is None

    def adopt(self, workspace: Path) -> WorkspaceTmpfs | NamespaceTmpfs:
        """Make the worker's /workspace hold ``workspace``'s files, at its path: the quota tmpfs, to be
        released by the sandbox. SandboxError: this worker cannot be used (the workspace is as it
        was; destroy() the worker)."""
        if not self.alive():
            raise SandboxError("the warm sandbox worker is gone or was used already")
        self.used = True
        if self.quota is not None:
            self.quota.attach(workspace, self.limits)
            return self.quota
        return NamespaceTmpfs.attach(self.worker.take_workspace_fd(), workspace, self.limits)

    def destroy(self) -> None:
        """Take the worker down and remove what it had (for a worker never adopted, or one whose adopt() failed)."""
        self.worker.kill()  # rootless: its tmpfs fd, never taken, is closed with it
        if self.quota is not None and self.quota.workspace == self.quota.staging:
            self.quota.release(keep=False)
