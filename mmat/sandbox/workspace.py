"""Host-side bookkeeping of a sandbox workspace: inputs, ownership, scans, hygiene and copies.

The parent (and the tool host) open workspace files on the HOST, where a symlink written by
sandboxed code would point into the host's filesystem and a FIFO would block the reader forever.
So the parent removes every symlink and special file before each tool call and after each step
(``sanitize``); only regular files and directories survive.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from mmat.errors import SandboxError

__all__ = ["FileState", "Snapshot", "scan", "sanitize", "copy_inputs", "chown_tree", "changed_files", "mirror", "remove_new_files"]


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    ino: int


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, FileState]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


def _walk(root: Path):  # type: ignore[no-untyped-def]
    """Yield (relative path, DirEntry) for every entry below root, never following symlinks."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            yield rel, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)


def scan(root: Path) -> Snapshot:
    """Regular files under root with size, mtime and inode (lstat only)."""
    files: dict[str, FileState] = {}
    for rel, entry in _walk(root):
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            files[rel] = FileState(st.st_size, st.st_mtime_ns, st.st_ino)
    return Snapshot(files)


def sanitize(root: Path) -> list[str]:
    """Delete symlinks and special files (FIFOs, sockets, devices) below root; return what went."""
    removed: list[str] = []
    for rel, entry in _walk(root):
        if entry.is_symlink() or not (entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False)):
            try:
                os.unlink(entry.path)
                removed.append(rel)
            except FileNotFoundError:
                continue
    return removed


def changed_files(before: Snapshot, after: Snapshot) -> list[str]:
    """Files created or modified between two snapshots, sorted."""
    return sorted(rel for rel, st in after.files.items() if before.files.get(rel) != st)


def remove_new_files(root: Path, before: Snapshot, after: Snapshot) -> list[str]:
    """Delete files that did not exist before (used when a step overflows the workspace quota)."""
    gone = sorted(rel for rel in after.files if rel not in before.files)
    for rel in gone:
        try:
            os.unlink(root / rel)
        except FileNotFoundError:
            continue
    return gone


def copy_inputs(workspace: Path, inputs: list[Path]) -> list[str]:
    """Copy input files (or directories) into the workspace root; names must not collide."""
    names: list[str] = []
    for src in inputs:
        src = Path(src)
        if not src.exists():
            raise SandboxError(f"sandbox input {src} does not exist: pass existing files in inputs=[...].")
        ws = workspace.resolve()
        if src.resolve().is_relative_to(ws):
            names.append(str(src.resolve().relative_to(ws)))
            continue  # already in the workspace
        dst = workspace / src.name
        if dst.exists():
            raise SandboxError(f"sandbox input {src} collides with {dst}: rename one of the inputs.")
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=False)
        else:
            shutil.copy2(src, dst)
        names.append(src.name)
    return names


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """lchown root and everything below it (the sandbox uid must own its workspace to write there)."""
    os.lchown(root, uid, gid)
    for _, entry in _walk(root):
        try:
            os.lchown(entry.path, uid, gid)
        except FileNotFoundError:
            continue


def mirror(src: Path, dst: Path) -> None:
    """Make dst's regular files and directories equal to src's (used to finish a fork's replay)."""
    want = scan(src)
    have = scan(dst)
    for rel, st in want.files.items():
        cur = have.files.get(rel)
        if cur is None or cur.size != st.size or cur.mtime_ns != st.mtime_ns:
            target = dst / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)
    for rel in have.files:
        if rel not in want.files:
            try:
                os.unlink(dst / rel)
            except FileNotFoundError:
                continue
    want_dirs = {rel for rel, e in _walk(src) if e.is_dir(follow_symlinks=False)}
    for rel, entry in sorted(_walk(dst), key=lambda x: x[0].count("/"), reverse=True):
        if entry.is_dir(follow_symlinks=False) and rel not in want_dirs:
            shutil.rmtree(entry.path, ignore_errors=True)
    for rel in sorted(want_dirs):
        (dst / rel).mkdir(parents=True, exist_ok=True)
