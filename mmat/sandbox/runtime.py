"""What the sandbox can see: the read-only runtime, its environment and its rlimits.

The new root contains only: /usr (read-only), the /bin /sbin /lib* symlinks or binds, the Python
installation and the virtualenv (read-only, at their host paths because the interpreter's rpath
and pyvenv.cfg point there), /etc/ld.so.cache, /etc/fonts, /var/cache/fontconfig, the workspace at /workspace (read-write), a private
/tmp, /dev/shm and a minimal /dev (null, zero, full, random, urandom), and /proc of the sandbox's
own PID namespace. Nothing else of the host exists inside: no /etc/passwd, no /root beyond the path
to the interpreter, no repository, no MMAT_HOME, no host /tmp, no /sys.
"""

from __future__ import annotations

import ast
import os
import resource
import site
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from mmat.sandbox.limits import Limits
from mmat.sandbox.seccomp import seccomp_program

__all__ = ["launcher_config", "runtime_binds", "sandbox_env", "site_paths", "WORKSPACE_MOUNT", "PYTHON_FLAGS", "launcher_source", "worker_imports", "worker_source"]

WORKSPACE_MOUNT = "/workspace"
WORKER_PATH = "/.mmat/worker.py"
# The launcher (and so the worker, a fork of it) runs with these. -I: ignore PYTHON* variables and the
# user site; -S: skip site.py (the venv's .pth files would add the repository to sys.path and cost
# ~70 ms); -B: the runtime is read-only, do not try to write .pyc.
PYTHON_FLAGS = ("-I", "-S", "-B")
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_WORKER_SOURCE = Path(__file__).with_name("_worker.py")
_LAUNCHER_SOURCE = Path(__file__).with_name("_launcher.py")
# The only other host paths inside: the dynamic loader's cache, fontconfig's configuration and its
# font cache (without them every new worker rebuilds the cache). Public, no users, no secrets.
_PUBLIC_HOST_PATHS = ("/etc/ld.so.cache", "/etc/fonts", "/var/cache/fontconfig")


def _covered(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@lru_cache(maxsize=1)
def site_paths() -> tuple[str, ...]:
    """Where the worker finds third-party packages (the venv's site-packages, resolved)."""
    paths = [os.path.realpath(p) for p in site.getsitepackages() if os.path.isdir(p)]
    return tuple(dict.fromkeys(paths))


@lru_cache(maxsize=1)
def runtime_binds() -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, str], ...]]:
    """(read-only binds, symlinks) that make up the runtime, identical for every sandbox of this process."""
    binds: list[dict[str, Any]] = []
    links: list[dict[str, str]] = []
    roots: list[str] = []

    def add_dir(path: str) -> None:
        real = os.path.realpath(path)
        if os.path.isdir(real) and not _covered(real, roots):
            binds.append({"src": real, "dst": real, "kind": "dir"})
            roots.append(real)

    add_dir("/usr")
    for name in _TOP_LEVEL_LINKS:
        top = f"/{name}"
        if os.path.islink(top):
            links.append({"path": top, "target": os.readlink(top)})
        elif os.path.isdir(top):
            add_dir(top)
    for path in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)), *site_paths()):
        add_dir(path)
    for path in _PUBLIC_HOST_PATHS:
        if os.path.isfile(path) and not os.path.islink(path):
            binds.append({"src": path, "dst": path, "kind": "file"})
        elif os.path.isdir(path) and not os.path.islink(path):
            binds.append({"src": path, "dst": path, "kind": "dir"})
    return tuple(binds), tuple(links)


def sandbox_env() -> dict[str, str]:
    """The worker's whole environment: nothing is inherited from the parent (no keys, no tokens)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": WORKSPACE_MOUNT,
        "PWD": WORKSPACE_MOUNT,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        # caches and configs of libraries go to the private /tmp, not into the workspace
        "XDG_CACHE_HOME": "/tmp/.cache",
        "XDG_CONFIG_HOME": "/tmp/.config",
        "MPLCONFIGDIR": "/tmp/.config/matplotlib",
        "MPLBACKEND": "Agg",
        # one thread per math library: sandboxes run in parallel and RLIMIT_NPROC counts threads
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


def _rlimits(limits: Limits) -> dict[str, tuple[int, int]]:
    """soft == hard everywhere (the sandbox cannot raise them), except CPU: the worker moves its soft
    limit per step below the hard lifetime budget."""
    cpu = int(limits.worker_cpu_s)
    return {
        "RLIMIT_AS": (limits.memory_bytes, limits.memory_bytes),
        "RLIMIT_FSIZE": (limits.file_size_bytes, limits.file_size_bytes),
        "RLIMIT_NPROC": (limits.max_processes, limits.max_processes),
        "RLIMIT_NOFILE": (limits.max_open_files, limits.max_open_files),
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_CPU": (cpu, cpu),
        "RLIMIT_MEMLOCK": (0, 0),
    }


@lru_cache(maxsize=1)
def launcher_source() -> bytes:
    """The launcher's code, sent on its stdin (it is started with ``-c``, so no host path shows in
    the sandbox's /proc/*/cmdline)."""
    return _LAUNCHER_SOURCE.read_bytes()


@lru_cache(maxsize=1)
def worker_source() -> str:
    return _WORKER_SOURCE.read_text()


# CPython 3.11 keeps ast.parse's recursion counter per interpreter, not per thread: two threads parsing at
# once (sandboxes started in parallel, before the cache below is filled) fail with "SystemError: AST
# constructor recursion depth mismatch". One parse at a time.
_parse_lock = threading.Lock()


def worker_imports() -> tuple[str, ...]:
    """The standard-library modules the worker imports at its top level: the launcher imports them
    before it forks the worker, so the worker starts without loading anything."""
    with _parse_lock:
        return _worker_imports()


@lru_cache(maxsize=1)
def _worker_imports() -> tuple[str, ...]:
    names: list[str] = []
    for node in ast.parse(worker_source()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return tuple(dict.fromkeys(names))


def launcher_config(
    workspace: Path | None,
    limits: Limits,
    *,
    uid: int,
    chan_fds: tuple[int, int],
    rootless: bool = False,
    cgroups: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON the launcher reads on stdin. rootless: map the caller to `uid` in a new user namespace,
    and make /workspace a tmpfs of the quota there (its fd comes back over `fd_sock`; ``workspace`` is
    not used); root mode binds ``workspace`` (the host's quota tmpfs is over it) at /workspace.
    cgroups: SandboxCgroup.launcher_spec() (None: no cgroups, SIGSTOP freezing)."""
    binds, links = runtime_binds()
    python = os.path.realpath(sys.executable)
    rlimits = _rlimits(limits)
    if rootless:
        # RLIMIT_NPROC counts per (user namespace, uid): the launcher and init share the worker's uid there
        n = limits.max_processes + 2
        rlimits["RLIMIT_NPROC"] = (n, n)
    return {
        "userns": {"uid": uid, "gid": uid, "outer_uid": os.getuid(), "outer_gid": os.getgid()} if rootless else None,
        "cgroups": cgroups,
        "binds": [*binds] if rootless else [*binds, {"src": str(Path(workspace).resolve()), "dst": WORKSPACE_MOUNT, "kind": "dir", "rw": True}],
        "workspace_tmpfs": {"size": limits.workspace_bytes, "nr_inodes": limits.workspace_inodes + 1} if rootless else None,
        "symlinks": list(links),
        "tmp_bytes": limits.tmp_bytes,
        "worker_source": worker_source(),
        "python": python,
        "worker_imports": list(worker_imports()),
        "env": sandbox_env(),
        "uid": uid,
        "gid": uid,
        "rlimits": {k: list(v) for k, v in rlimits.items() if hasattr(resource, k)},
        "chan_fds": list(chan_fds),
        "seccomp_hex": seccomp_program().hex(),
    }
