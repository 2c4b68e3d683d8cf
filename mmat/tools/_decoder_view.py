"""The decoders' view of the host (mmat.tools.bounded): what lets a decoder child run as a stranger.

In root mode every decoder child drops to a fresh random uid/gid (no groups). The libraries it runs
load parts of themselves lazily (stdlib ``encodings.*`` on a first use of a codec, pdfminer's CMaps,
pandas' optional readers), and the interpreter may live under a directory closed to other users
(pyenv under /root, mode 0700). So the forkserver, still root, enters a private mount namespace once
(``expose_runtime``): each closed directory above a runtime path is covered by a small tmpfs that
holds read-only binds of just those paths. Every decoder child inherits that namespace; the rest of
such a directory (root's home) is not there at all, and every other host file is reachable only as
its mode allows any user. The host's own mounts and permissions are not changed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

__all__ = ["expose_runtime", "runtime_paths", "outermost_open", "closed_tops"]

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_LOCKABLE = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC


def runtime_paths() -> list[str]:
    """Directories a decoder may read code or data from: the sandbox's runtime (/usr, the Python
    installation, the venv, site-packages), every directory on sys.path, and mmat's own checkout."""
    from mmat.sandbox.runtime import runtime_binds

    binds, _ = runtime_binds()
    paths = [b["src"] for b in binds if b["kind"] == "dir"]
    paths += [p for p in sys.path if p]
    here = Path(__file__).resolve()
    paths += [str(here.parents[1]), str(here.parents[2])]  # the mmat package, and the directory holding it
    return outermost_open(sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}))


def outermost_open(paths: list[str]) -> list[str]:
    """The paths other users may enter, each dropped when one above it is kept (a bind of a directory
    brings everything below it). A path others cannot enter is never kept, nor merged into: a bind keeps
    its mode, so for a checkout in a 0700 directory (mktemp -d) its open venv and package are bound
    instead of the closed checkout, which would hide them again."""
    entered = [p for p in paths if os.stat(p).st_mode & 0o001]
    return [p for p in entered if not any(q != p and p.startswith(q.rstrip("/") + "/") for q in entered)]


def closed_tops(paths: list[str]) -> dict[str, list[str]]:
    """{outermost directory other users cannot enter: [paths below it]}; paths already reachable by
    anyone, and paths that are themselves closed (nothing to expose: the decoders cannot read them
    either way), are left out."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        if not os.stat(p).st_mode & 0o001:
            continue
        closed = next((str(a) for a in reversed(Path(p).parents) if not os.stat(a).st_mode & 0o001), None)
        if closed is None:
            continue
        groups.setdefault(closed, []).append(p)
    return groups


def expose_runtime() -> str | None:
    """Run once in the forkserver, as root: the private view described above. None when done (or
    nothing needed doing), else why it could not be made (the decoders then run without it; what
    they load lazily from a closed directory fails as a decoding error)."""
    groups = closed_tops(runtime_paths())
    if not groups:
        return None
    from mmat.sandbox.quota import mount_fs as mount

    libc = ctypes.CDLL(None, use_errno=True)

    try:
        if libc.unshare(_CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
        mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing of this reaches the host's mounts
        for top, below in groups.items():
            fds = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in below]  # before the tmpfs hides them
            try:
                mount("mmat-decoder-view", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
                for p, fd in zip(below, fds):
                    os.makedirs(p, mode=0o755, exist_ok=True)
                    mount(f"/proc/self/fd/{fd}", p, None, _MS_BIND | _MS_REC)
                    inherited = os.fstatvfs(fd).f_flag & _LOCKABLE
                    mount(None, p, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | inherited)
            finally:
                for fd in fds:
                    os.close(fd)
    except OSError as e:
        return str(e)
    return None
