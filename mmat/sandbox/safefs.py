"""Opening files of an untrusted directory tree without ever following a link out of it.

Code in a sandbox can swap any file or directory of its workspace for a symlink, a FIFO or a device
node at any moment, including between the parent's check and the parent's open. So nothing here
checks a path and then opens it: every open starts from a directory fd of the workspace root and
resolves the relative name in the kernel in one call, refusing symlinks on every component:

* ``openat2(2)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
  RESOLVE_NO_XDEV`` where the kernel has it (Linux >= 5.6; called through ctypes, syscall 437);
* otherwise a component walk: each directory opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to
  the previous one, the last component with ``O_NOFOLLOW``.

Names with ``..`` are refused rather than resolved, so both paths give the same answers. Reads open
with ``O_NONBLOCK`` (a FIFO cannot block the opener) and ``fstat`` the open fd: only regular files
are read, and never more than the caller's byte budget. New files are created ``O_CREAT | O_EXCL |
O_NOFOLLOW`` from the directory fd, so a planted name (link or not) makes creation fail instead of
writing through it. Walks open each directory ``O_NOFOLLOW`` from its parent's fd; unlink and chown
go through the parent's fd with ``follow_symlinks=False``.

What is handed on to a library is bytes or an open file object, never a path.

**Redirected workspaces** (rootless mode, mmat.sandbox.quota.NamespaceTmpfs): while a sandbox runs,
its workspace is a tmpfs inside the sandbox's own mount namespace, which the host path does not show.
``redirect(path, fd)`` registers the tmpfs root's fd for the workspace path; from then on every
``root()`` / ``open_root()`` of that path, or of a directory below it, opens the tmpfs instead (below
it: resolved from the fd like any other name, never through a link), so the parent and its tools
reach the live files through the same calls as in root mode. ``unredirect(path)`` ends it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "UnsafePath", "NotRegularFile", "FileTooLarge", "Entry",
    "split_name", "open_root", "open_beneath", "read_bytes", "open_for_read", "create_exclusive",
    "walk", "unlink", "mkdirs", "copy_file", "has_openat2", "redirect", "unredirect", "live_path",
    "MAX_NAME_BYTES", "MAX_PATH_BYTES", "MAX_WALK_DEPTH",
]  # fmt: skip

SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall tables were unified)
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x01, 0x02, 0x04, 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
MAX_NAME_BYTES = 255  # NAME_MAX
MAX_PATH_BYTES = 4095  # PATH_MAX minus the NUL
# Walks descend at most this deep: each level holds one fd. Deeper entries are not visited (and
# counted in Walk.too_deep), which a quota check can treat as a violation.
MAX_WALK_DEPTH = 64
_BASE = os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW


class UnsafePath(OSError):
    """A name that cannot be opened safely: a symlink on the way, '..', an absolute name, NUL, too long."""


class NotRegularFile(UnsafePath):
    """The name is a FIFO, socket, device or directory where a regular file was wanted."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"'{name}' is a {kind}, not a regular file")
        self.kind = kind


class FileTooLarge(UnsafePath):
    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"'{name}' is {size:,} bytes, more than the {limit:,} allowed")
        self.size, self.limit = size, limit


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_works: bool | None = None


def has_openat2() -> bool:
    """Whether this kernel (and seccomp policy) lets us use openat2; probed once."""
    global _openat2_works
    if _openat2_works is None:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            probe = _openat2(fd, b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, probe=True)
            _openat2_works = probe is not None
            if probe is not None:
                os.close(probe)
        finally:
            os.close(fd)
    return _openat2_works


def _openat2(dir_fd: int, name: bytes, flags: int, mode: int, *, probe: bool = False) -> int | None:
    """The fd; None (probe only) when openat2 is not available here; OSError for every failure."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    creates = flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)
    how = _OpenHow(flags, mode if creates else 0, _RESOLVE)  # openat2 refuses a mode without O_CREAT
    fd = _libc.syscall(SYS_OPENAT2, dir_fd, name, ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if probe and err in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
        return None  # kernel without openat2, or a seccomp filter that refuses it: use the walk
    if err in (errno.ELOOP, errno.EXDEV):
        raise UnsafePath(err, f"'{name.decode('utf-8', 'replace')}' passes through a symbolic link or leaves the directory")
    raise OSError(err, os.strerror(err), name.decode("utf-8", "replace"))


def split_name(name: str) -> list[str]:
    """Components of a relative name; UnsafePath for '..', absolute names, NUL and overlong names."""
    if not isinstance(name, str):
        raise UnsafePath(errno.EINVAL, f"a file name must be text, got {type(name).__name__}")
    if "\x00" in name:
        raise UnsafePath(errno.EINVAL, "the file name contains a NUL character")
    if name.startswith("/"):
        raise UnsafePath(errno.EINVAL, f"'{name[:80]}' is an absolute path; use a name relative to the workspace")
    try:
        encoded = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UnsafePath(errno.EINVAL, "the file name is not valid text (it holds an unpaired surrogate)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(errno.ENAMETOOLONG, f"the file name is {len(encoded):,} bytes long, more than the {MAX_PATH_BYTES:,} allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for p in parts:
        if p == "..":
            raise UnsafePath(errno.EINVAL, f"'{name[:80]}' goes up with '..'; use a name relative to the workspace")
        if len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise UnsafePath(errno.ENAMETOOLONG, f"a component of the file name is longer than {MAX_NAME_BYTES} bytes")
    return parts


def _enc(part: str) -> bytes:
    return part.encode("utf-8", "surrogateescape")


def open_root(path: Path | str | int) -> int:
    """An fd of the workspace root itself. Its path is the parent's own (the sandbox cannot rename or
    replace its mount point), so it is opened by path, still refusing a symlink as the last component.
    A redirected workspace (or a directory below one) is opened from its registered fd; an int is a
    directory fd already open, opened again (a new file description: listings never share an offset)."""
    if isinstance(path, int):
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | _BASE, dir_fd=path)
    if _redirects:
        with _redirect_lock:
            hit = _redirected(path)
            if hit is not None:
                fd, rel = hit
                return open_beneath(fd, rel, os.O_RDONLY | os.O_DIRECTORY)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | _BASE)


_redirect_lock = threading.Lock()
_redirects: dict[str, int] = {}  # workspace path (resolved) -> fd of what the sandbox sees there


def redirect(path: Path | str, fd: int) -> None:
    """From now on, root(path) and root(a directory below path) open below ``fd`` (see the module docstring)."""
    with _redirect_lock:
        _redirects[os.path.abspath(path)] = fd


def unredirect(path: Path | str) -> None:
    """path is the host directory again; the caller closes the fd it registered (after this returns)."""
    with _redirect_lock:
        _redirects.pop(os.path.abspath(path), None)


def _redirected(path: Path | str) -> tuple[int, str] | None:
    """(fd, name below it) when path is a redirected workspace or below one; under _redirect_lock."""
    for candidate in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        rel: list[str] = []
        here = candidate
        while True:
            fd = _redirects.get(here)
            if fd is not None:
                return fd, "/".join(reversed(rel))
            up, name = os.path.split(here)
            if up == here:
                break
            rel.append(name)
            here = up
    return None


def live_path(path: Path | str) -> Path:
    """A path through which ``path`` shows what the sandbox sees there now: itself, or for a redirected
    workspace ``/proc/self/fd/N/...`` (valid while the sandbox is open). For tests and naive tool hosts
    that open files by name; mmat itself goes through root()."""
    with _redirect_lock:
        hit = _redirected(path)
    if hit is None:
        return Path(path)
    fd, rel = hit
    return Path(f"/proc/self/fd/{fd}") / rel if rel else Path(f"/proc/self/fd/{fd}")


def open_beneath(root_fd: int, name: str, flags: int, mode: int = 0o644) -> int:
    """Open ``name`` relative to ``root_fd`` with no symlink anywhere and nothing outside ``root_fd``."""
    parts = split_name(name)
    if not parts:
        return os.open(".", flags | _BASE, mode, dir_fd=root_fd)
    flags |= _BASE
    if has_openat2():
        return _openat2(root_fd, _enc("/".join(parts)), flags, mode)  # type: ignore[return-value]
    return _walk_open(root_fd, parts, flags, mode)


def _walk_open(root_fd: int, parts: list[str], flags: int, mode: int) -> int:
    fd = root_fd
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(_enc(part), os.O_RDONLY | os.O_DIRECTORY | _BASE, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part):
                    raise UnsafePath(errno.ELOOP, f"'{part}' is a symbolic link") from None
                raise
            if fd != root_fd:
                os.close(fd)
            fd = nxt
        try:
            return os.open(_enc(parts[-1]), flags, mode, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and _is_link(fd, parts[-1])):
                raise UnsafePath(errno.ELOOP, f"'{parts[-1]}' is a symbolic link") from None
            raise
    finally:
        if fd != root_fd:
            os.close(fd)


def _is_link(dir_fd: int, part: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(_enc(part), dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "special file"


def open_for_read(root_fd: int, name: str, max_bytes: int) -> tuple[BinaryIO, int]:
    """(file object, size) of a regular file below root_fd. O_NONBLOCK keeps a FIFO from blocking the
    open; fstat on the open fd (not the name) decides, so nothing can be swapped in between."""
    fd = open_beneath(root_fd, name, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(name, _kind(st.st_mode))
        if st.st_size > max_bytes:
            raise FileTooLarge(name, st.st_size, max_bytes)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_bytes(root_fd: int, name: str, max_bytes: int) -> bytes:
    """The bytes of a regular file below root_fd, at most max_bytes (a file growing meanwhile is cut there)."""
    f, _ = open_for_read(root_fd, name, max_bytes)
    with f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(name, len(data), max_bytes)
    return data


def mkdirs(root_fd: int, parts: list[str], mode: int = 0o755) -> int:
    """An fd of the directory root/parts..., creating missing ones; never through a link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                os.mkdir(_enc(part), mode, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nxt = os.open(_enc(part), os.O_RDONLY | os.O_DIRECTORY | _BASE, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(e.errno, f"'{part}' is a symbolic link or not a directory") from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def create_exclusive(root_fd: int, name: str, mode: int = 0o644, *, make_parents: bool = False) -> int:
    """A new regular file (O_CREAT | O_EXCL | O_NOFOLLOW from its directory's fd), open for writing.
    FileExistsError when the name exists in any form, including a planted symlink."""
    parts = split_name(name)
    if not parts:
        raise UnsafePath(errno.EINVAL, "an output needs a file name")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if not make_parents or len(parts) == 1:
        return open_beneath(root_fd, name, flags, mode)
    dfd = mkdirs(root_fd, parts[:-1])
    try:
        return os.open(_enc(parts[-1]), flags | _BASE, mode, dir_fd=dfd)
    finally:
        os.close(dfd)


def unlink(root_fd: int, name: str) -> bool:
    """Remove a non-directory entry (file, link, FIFO...) through its parent's fd; False if it was gone."""
    parts = split_name(name)
    if not parts:
        return False
    parent = "/".join(parts[:-1])
    try:
        dfd = open_beneath(root_fd, parent, os.O_RDONLY | os.O_DIRECTORY) if parent else os.dup(root_fd)
    except (FileNotFoundError, NotADirectoryError, UnsafePath):
        return False
    try:
        os.unlink(_enc(parts[-1]), dir_fd=dfd)
        return True
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False
    finally:
        os.close(dfd)


@dataclass
class Entry:
    """One entry met by walk(): its name relative to the root, its lstat, and its parent's open fd
    (valid only until the walk moves on) for *at calls."""

    rel: str
    name: str
    st: os.stat_result
    dir_fd: int


class Walk:
    """Iterate over every entry below root_fd (depth first), never following a link; see walk()."""

    def __init__(self, root_fd: int, *, max_depth: int = MAX_WALK_DEPTH) -> None:
        self.root_fd, self.max_depth = root_fd, max_depth
        self.too_deep = 0

    def __iter__(self) -> Iterator[Entry]:
        yield from self._dir(self.root_fd, "", 0)

    def _dir(self, fd: int, rel_dir: str, depth: int) -> Iterator[Entry]:
        try:
            names = os.listdir(fd)
        except OSError:
            return
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            rel = f"{rel_dir}/{name}" if rel_dir else name
            yield Entry(rel, name, st, fd)
            if not stat.S_ISDIR(st.st_mode):
                continue
            if depth + 1 >= self.max_depth:
                self.too_deep += 1
                continue
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | _BASE, dir_fd=fd)
            except OSError:
                continue  # swapped for a link or a file since the stat: not ours to follow
            try:
                sst = os.fstat(sub)
                if (sst.st_dev, sst.st_ino) == (st.st_dev, st.st_ino):
                    yield from self._dir(sub, rel, depth + 1)
            finally:
                os.close(sub)


def walk(root_fd: int, *, max_depth: int = MAX_WALK_DEPTH) -> Walk:
    """Every entry below root_fd, parents before children. Directories are opened O_NOFOLLOW from
    their parent's fd and checked to be the inode that was listed, so a directory swapped for a link
    (or for another directory) mid-walk is skipped, never entered."""
    return Walk(root_fd, max_depth=max_depth)


def copy_file(src: BinaryIO, size: int, dst_fd: int) -> int:
    """Copy at most ``size`` bytes from an open file to an open fd; returns bytes written."""
    left, done = size, 0
    while left > 0:
        chunk = src.read(min(left, 1 << 20))
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            n = os.write(dst_fd, view)
            view = view[n:]
        left -= len(chunk)
        done += len(chunk)
    return done


@contextmanager
def root(path: Path | str | int) -> Iterator[int]:
    """``with safefs.root(workspace) as fd:`` an fd of the workspace root, closed afterwards."""
    fd = open_root(path)
    try:
        yield fd
    finally:
        os.close(fd)
