"""Run a command as a throwaway unprivileged user (rootless-mode tests and benchmarks, run as root).

``with throwaway_user() as (uid, gid):`` creates a system user (no home, no login shell) and deletes
it afterwards. ``unprivileged_command(argv, uid, gid, ...)`` wraps argv so that it runs as that user
with no groups and no capabilities, in a private mount namespace where every path it needs is
reachable: when the interpreter lives under a directory closed to other users (pyenv under /root,
mode 0700), that directory is covered by a tmpfs holding read-only binds of just the needed paths.
Nothing on the host changes, not even for the command's duration, and nothing needs restoring if
the run is killed. Needs root, util-linux (unshare, setpriv, mount) and passwd (useradd, userdel).
"""

from __future__ import annotations

import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["throwaway_user", "unprivileged_command", "python_paths", "RootlessSetupError", "missing_tools"]

_TOOLS = ("unshare", "setpriv", "useradd", "userdel", "mount")


class RootlessSetupError(RuntimeError):
    """The throwaway user or the command around it could not be set up (not a failure of the command)."""


def missing_tools() -> list[str]:
    return [t for t in _TOOLS if shutil.which(t) is None]


@contextmanager
def throwaway_user(prefix: str = "mmat-rl") -> Iterator[tuple[int, int]]:
    name = f"{prefix}-{secrets.token_hex(4)}"
    cmd = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", name]
    for attempt in range(10):  # another useradd/userdel may hold the passwd lock for a moment
        made = subprocess.run(cmd, capture_output=True, text=True)
        if made.returncode == 0:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        raise RootlessSetupError(f"useradd {name} failed: {made.stderr.strip()}")
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        for attempt in range(10):
            if subprocess.run(["userdel", name], capture_output=True).returncode in (0, 6):  # 6: no such user
                break
            time.sleep(0.5 * (attempt + 1))


def python_paths(*extra: Path) -> list[Path]:
    """What a Python run of this checkout needs to read: the interpreter, the venv, its site-packages."""
    from mmat.sandbox.runtime import site_paths

    exe = Path(sys.executable)
    return [Path(sys.prefix), Path(sys.base_prefix), exe.resolve().parent, *map(Path, site_paths()), *extra]


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _exposure(paths: Sequence[Path], stage: Path) -> list[str]:
    needed = sorted({p.resolve() for p in paths})
    needed = [p for p in needed if not any(q != p and p.is_relative_to(q) for q in needed)]
    groups: dict[Path, list[Path]] = {}
    for p in needed:
        if _world_traversable(p):
            continue
        closed = [a for a in reversed([p, *p.parents]) if not a.stat().st_mode & 0o001]
        if closed[0] == p:
            raise RootlessSetupError(f"{p} itself is closed to other users (mode {oct(p.stat().st_mode & 0o777)})")
        groups.setdefault(closed[0], []).append(p)
    q = shlex.quote
    lines = ["set -e"]
    n = 0
    for top, below in groups.items():
        staged = []
        for p in below:
            s = stage / str(n)
            n += 1
            lines += [f"mkdir -p {q(str(s))}", f"mount --bind {q(str(p))} {q(str(s))}"]
            staged.append((s, p))
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m mmat-expose {q(str(top))}")
        for s, p in staged:
            lines += [f"mkdir -p {q(str(p))}", f"mount --bind {q(str(s))} {q(str(p))}", f"mount -o remount,bind,ro {q(str(p))}", f"umount {q(str(s))}"]
    return lines


def unprivileged_command(argv: Sequence[str], uid: int, gid: int, *, paths: Sequence[Path], env: dict[str, str], cwd: Path, stage: Path) -> list[str]:
    """argv wrapped: private mount namespace, `paths` exposed, then setpriv to uid/gid (no groups,
    no capabilities) with exactly `env`. `stage` is an empty scratch directory (root's) for the binds."""
    script = _exposure(paths, stage)
    inner = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
    script += [f"cd {shlex.quote(str(cwd))}", "exec " + shlex.join(inner)]
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", "\n".join(script)]
