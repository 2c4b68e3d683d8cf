"""Which isolation this machine gets: "root" or "rootless", chosen automatically, or a clear error.

* **root** (effective uid 0): the launcher creates the namespaces itself; every sandbox runs as its
  own random host uid; per-sandbox cgroups (freezer, memory, pids) where the hierarchies are writable.
* **rootless** (any other user, where unprivileged user namespaces work): the launcher first enters a
  new user namespace in which only the caller exists, mapped to the sandbox's inner uid (a random
  unprivileged id, never 0), and builds the same mount/PID/network/IPC/UTS namespaces, filesystem
  view, rlimits and seccomp filter inside it. On the host the worker is the caller's own uid.
  cgroups are used only where the caller's own cgroup is delegated to it (writable); otherwise the
  sandbox is stopped between steps with SIGSTOP and bounded by per-process rlimits.

A subordinate uid range (newuidmap) is deliberately not used: it would make the workspace's files
belong to a host uid the caller cannot read back without entering the namespace again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mmat.errors import SandboxError

__all__ = ["SandboxMode", "sandbox_mode", "probe_rootless", "USERNS_HELP"]

USERNS_HELP = (
    "run mmat as root (for example in a container: docker run ...), or enable unprivileged user "
    "namespaces (sysctl kernel.unprivileged_userns_clone=1 on Debian/Ubuntu kernels, "
    "user.max_user_namespaces > 0, and on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0 "
    "or an AppArmor profile that allows userns for this Python)"
)

# What the probe does in a throwaway child: exactly the calls the rootless launcher needs first.
_PROBE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno(); print(f"{what}: {os.strerror(e)}"); sys.exit(1)
uid, gid = os.getuid(), os.getgid()
check(libc.unshare(0x10000000), "unshare(CLONE_NEWUSER)")
try:
    open("/proc/self/setgroups", "w").write("deny")
    open("/proc/self/uid_map", "w").write(f"1000 {uid} 1")
    open("/proc/self/gid_map", "w").write(f"1000 {gid} 1")
except OSError as e:
    print(f"writing the id maps: {e.strerror}"); sys.exit(1)
check(libc.unshare(0x00020000 | 0x40000000 | 0x08000000 | 0x04000000 | 0x20000000), "unshare(mount, net, ipc, uts, pid)")
check(libc.mount(None, b"/", None, (1 << 18) | 16384, None), "making mounts private")
check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 6, b"size=64k"), "mounting a tmpfs")
print("ok")
"""


@dataclass(frozen=True)
class SandboxMode:
    name: str  # "root" | "rootless"
    reason: str


def _sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@lru_cache(maxsize=1)
def probe_rootless() -> tuple[bool, str]:
    """(works, why): can this user build a sandbox in a user namespace? Tried for real, once per process."""
    if _sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return False, "kernel.unprivileged_userns_clone is 0"
    if _sysctl("/proc/sys/user/max_user_namespaces") == "0":
        return False, "user.max_user_namespaces is 0"
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-B", "-c", _PROBE],
            capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, cwd="/",
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"the probe did not run ({e})"
    text = (out.stdout or out.stderr).strip().splitlines()
    last = text[-1] if text else f"exit code {out.returncode}"
    if out.returncode == 0 and last == "ok":
        return True, "unprivileged user namespaces work here"
    extra = ""
    if _sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        extra = " (AppArmor restricts unprivileged user namespaces: kernel.apparmor_restrict_unprivileged_userns=1)"
    return False, f"{last}{extra}"


def sandbox_mode() -> SandboxMode:
    """The mode Sandbox() uses here; SandboxError (saying what to do) when neither works."""
    if os.geteuid() == 0:
        return SandboxMode("root", "running as root: namespaces, mounts and a host uid per sandbox")
    works, why = probe_rootless()
    if works:
        return SandboxMode("rootless", f"not root (uid {os.geteuid()}), and {why}: the sandbox is built inside a new user namespace")
    raise SandboxError(f"the sandbox cannot be built here: not root (uid {os.geteuid()}) and no user namespace ({why}). To fix it, {USERNS_HELP}.")
