"""Host-side bookkeeping of a sandbox workspace: inputs, ownership, scans, hygiene and copies.

The parent runs as root (or as the user) on the host, where a symlink written by sandboxed code
would point into the host's filesystem and a FIFO would block a reader forever; and the sandbox may
swap any entry while the parent looks at it. So every function here works through directory fds
(``mmat.sandbox.safefs``): walks open each directory ``O_NOFOLLOW`` from its parent's fd, reads
open regular files only, writes create ``O_EXCL``, and unlink/chown act on the parent's fd without
following links. Nothing is checked by path and then opened again. Where a function takes
``Path | int``, an int is an open directory fd (a rootless sandbox's tmpfs, mmat.sandbox.quota).

``sanitize`` still deletes symlinks and special files after each step and before each tool call:
not for safety (nothing here follows them) but so that naive tool hosts and people looking at the
workspace afterwards only meet regular files and directories.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mmat.errors import SandboxError
from mmat.sandbox import safefs

__all__ = [
    "FileState", "Snapshot", "scan", "sanitize", "copy_inputs", "chown_tree", "changed_files", "mirror",
    "remove_new_files", "copy_tree", "read_file", "export_file",
]  # fmt: skip


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    ino: int


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, FileState]
    dirs: int = 0  # directories below the root
    others: int = 0  # symlinks and special files
    too_deep: int = 0  # directories deeper than safefs.MAX_WALK_DEPTH, not looked into

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def inodes(self) -> int:
        """Files, directories and other entries (what an inode quota counts)."""
        return len(self.files) + self.dirs + self.others


def scan(root: Path | int) -> Snapshot:
    """Regular files under root with size, mtime and inode (lstat through dir fds only)."""
    files: dict[str, FileState] = {}
    dirs = others = 0
    with safefs.root(root) as fd:
        walk = safefs.walk(fd)
        for e in walk:
            if stat.S_ISREG(e.st.st_mode):
                files[e.rel] = FileState(e.st.st_size, e.st.st_mtime_ns, e.st.st_ino)
            elif stat.S_ISDIR(e.st.st_mode):
                dirs += 1
            else:
                others += 1
        return Snapshot(files, dirs, others, walk.too_deep)


def sanitize(root: Path) -> list[str]:
    """Delete symlinks and special files (FIFOs, sockets, devices) below root; return what went."""
    removed: list[str] = []
    with safefs.root(root) as fd:
        for e in safefs.walk(fd):
            if stat.S_ISDIR(e.st.st_mode) or stat.S_ISREG(e.st.st_mode):
                continue
            try:
                os.unlink(e.name, dir_fd=e.dir_fd)
                removed.append(e.rel)
            except (FileNotFoundError, IsADirectoryError):
                continue  # gone or replaced by a directory meanwhile
    return removed


def changed_files(before: Snapshot, after: Snapshot) -> list[str]:
    """Files created or modified between two snapshots, sorted."""
    return sorted(rel for rel, st in after.files.items() if before.files.get(rel) != st)


def remove_new_files(root: Path, before: Snapshot, after: Snapshot) -> list[str]:
    """Delete files that did not exist before (used when a step overflows the workspace quota)."""
    gone = sorted(rel for rel in after.files if rel not in before.files)
    with safefs.root(root) as fd:
        for rel in gone:
            safefs.unlink(fd, rel)
    return gone


def copy_inputs(workspace: Path, inputs: list[Path]) -> list[str]:
    """Copy input files (or directories) into the workspace root; names must not collide.

    Inputs are the caller's own files (trusted); the destination is written through the workspace's
    fd, each file created O_EXCL."""
    names: list[str] = []
    ws = workspace.resolve()
    for src in inputs:
        src = Path(src)
        if not src.exists():
            raise SandboxError(f"sandbox input {src} does not exist: pass existing files in inputs=[...].")
        if src.resolve().is_relative_to(ws):
            names.append(str(src.resolve().relative_to(ws)))
            continue  # already in the workspace
        if os.path.lexists(ws / src.name):
            raise SandboxError(f"sandbox input {src} collides with {ws / src.name}: rename one of the inputs.")
        with safefs.root(ws) as fd:
            if src.is_dir():
                for dirpath, _, filenames in os.walk(src):
                    rel_dir = Path(dirpath).relative_to(src.parent).as_posix()
                    os.close(safefs.mkdirs(fd, safefs.split_name(rel_dir)))
                    for fname in filenames:
                        _copy_in(Path(dirpath) / fname, fd, f"{rel_dir}/{fname}")
            else:
                _copy_in(src, fd, src.name)
        names.append(src.name)
    return names


def _copy_in(src: Path, root_fd: int, rel: str) -> None:
    with open(src, "rb") as f:
        st = os.fstat(f.fileno())
        out = safefs.create_exclusive(root_fd, rel, 0o644)
        try:
            shutil.copyfileobj(f, os.fdopen(out, "wb", closefd=False))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """lchown root and everything below it (the sandbox uid must own its workspace to write there)."""
    with safefs.root(root) as fd:
        os.fchown(fd, uid, gid)
        for e in safefs.walk(fd):
            try:
                os.chown(e.name, uid, gid, dir_fd=e.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue


def read_file(root: Path, rel: str, max_bytes: int) -> bytes:
    """Bytes of one regular workspace file (no links followed, no special files, at most max_bytes)."""
    with safefs.root(root) as fd:
        return safefs.read_bytes(fd, rel, max_bytes)


def export_file(root: Path, rel: str, dest: Path, max_bytes: int) -> Path:
    """Copy one regular workspace file to ``dest`` (a trusted path outside the workspace)."""
    data = read_file(root, rel, max_bytes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


# What a concurrent change by the sandbox can make a copy step fail with: that entry is skipped.
_RACED = (safefs.UnsafePath, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _copy_entry(src_fd: int, dst_fd: int, rel: str) -> None:
    """Copy one regular file below src_fd to the same name below dst_fd (created O_EXCL), keeping mtime."""
    try:
        f, size = safefs.open_for_read(src_fd, rel, max_bytes=1 << 62)
    except (FileNotFoundError, NotADirectoryError, safefs.UnsafePath):
        return  # swapped for a link or special file meanwhile: not copied
    with f:
        st = os.fstat(f.fileno())
        out = safefs.create_exclusive(dst_fd, rel, stat.S_IMODE(st.st_mode) & 0o777, make_parents=True)
        try:
            safefs.copy_file(f, size, out)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)


def copy_tree(src: Path | int, dst: Path | int) -> None:
    """Copy src's regular files and directories into dst (existing entries of dst are replaced).
    Symlinks and special files are not copied; nothing of src is opened by path."""
    with safefs.root(src) as sfd, safefs.root(dst) as dfd:
        for e in safefs.walk(sfd):
            try:
                if stat.S_ISDIR(e.st.st_mode):
                    os.close(safefs.mkdirs(dfd, safefs.split_name(e.rel)))
                elif stat.S_ISREG(e.st.st_mode):
                    _remove_any(dfd, e.rel)
                    _copy_entry(sfd, dfd, e.rel)
            except _RACED:
                continue


def _remove_any(root_fd: int, rel: str) -> None:
    """Remove whatever is at rel below root_fd (a directory recursively), through fds only."""
    parts = safefs.split_name(rel)
    parent = "/".join(parts[:-1])
    try:
        pfd = safefs.open_beneath(root_fd, parent, os.O_RDONLY | os.O_DIRECTORY) if parent else os.dup(root_fd)
    except (FileNotFoundError, NotADirectoryError, safefs.UnsafePath):
        return
    try:
        st = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=pfd)  # the fd-based rmtree: never follows links
        else:
            os.unlink(parts[-1], dir_fd=pfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(pfd)


def mirror(src: Path | int, dst: Path | int, *, since: Snapshot | None = None) -> None:
    """Make dst's regular files and directories equal to src's (used to finish a fork's replay).
    ``since``: a scan of dst taken earlier; files of dst that src lacks are then removed only if they
    were there, unchanged, at that scan (src deleted them), and kept if dst got them since (someone
    else wrote them into dst meanwhile), with their directories. Where both have a name, src wins."""
    want = scan(src)
    have = scan(dst)
    spared = set() if since is None else {rel for rel, st in have.files.items() if rel not in want.files and since.files.get(rel) != st}
    spared_dirs = _dirs_of(spared)
    old_dirs = None if since is None else _dirs_of(since.files)
    with safefs.root(src) as sfd, safefs.root(dst) as dfd:
        want_dirs = {e.rel for e in safefs.walk(sfd) if stat.S_ISDIR(e.st.st_mode)}
        have_dirs = [e.rel for e in safefs.walk(dfd) if stat.S_ISDIR(e.st.st_mode)]
        # first remove what src does not have (also where a file became a directory or back)
        for rel in have.files:
            if rel not in want.files and rel not in spared:
                safefs.unlink(dfd, rel)
        for rel in sorted(have_dirs, key=lambda r: r.count("/"), reverse=True):
            if rel not in want_dirs and rel not in spared_dirs and (old_dirs is None or rel in old_dirs):
                _remove_any(dfd, rel)
        for rel in sorted(want_dirs):
            try:
                os.close(safefs.mkdirs(dfd, safefs.split_name(rel)))
            except _RACED:
                continue
        for rel, st in want.files.items():
            cur = have.files.get(rel)
            if cur is None or cur.size != st.size or cur.mtime_ns != st.mtime_ns:
                try:
                    _remove_any(dfd, rel)
                    _copy_entry(sfd, dfd, rel)
                except _RACED:
                    continue


def _dirs_of(files: Iterable[str]) -> set[str]:
    """The directories these files lie in (a snapshot does not name empty ones)."""
    return {"/".join(parts[:i]) for rel in files for parts in [rel.split("/")] for i in range(1, len(parts))}
