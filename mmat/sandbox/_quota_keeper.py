"""Takes the workspace quota mounts down if the mmat process dies without closing its sandboxes.

Started once per parent process (root mode) as ``python -I -S -B _quota_keeper.py`` in its own
session; standard library only. The parent writes JSON lines: ``{"op": "add", "workspace": ...,
"staging": ...}`` *before* it mounts a quota tmpfs (on the staging directory, or bound over the
workspace), ``{"op": "del", "workspace": ...}`` once released. On EOF (the parent exited or was
killed) every entry still listed is taken down, the last added first (a mount made later may sit
inside or on top of an earlier one), the way Sandbox.close() would: after a grace period for the
launchers to kill their sandboxes, the workspace is unmounted, the directory underneath is emptied
and refilled from the tmpfs (regular files and directories only, never following a link), then the
tmpfs is unmounted and its staging directory removed. An entry whose mount was never made (the
parent died between telling and mounting) only loses its empty staging directory.

Notes on what could not be restored go to stderr only after every mount is down: stderr may be a
pipe nobody reads any more, and a blocked write must not leave mounts behind.
"""

import ctypes
import json
import os
import re
import signal
import stat
import sys
import time

MNT_DETACH = 2
# The launchers notice the parent's death on their stdin and kill their sandboxes within milliseconds;
# a sandbox still alive meanwhile cannot mislead the copy (no link is followed, the destination is
# invisible to it), so the wait is short: a caller re-running at once must find its directory back.
GRACE_S = 0.1
# How long the final notes may take to write (a full pipe nobody reads would block forever).
NOTE_TIMEOUT_S = 2

libc = ctypes.CDLL(None, use_errno=True)
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
notes = []


def _unescape(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mount_point(path):
    """Whether some mount of this mount namespace sits exactly on path (from /proc/self/mountinfo)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return any(_unescape(line.split()[4]) == path for line in f if len(line.split()) > 4)


def _clear(dir_fd):
    for name in os.listdir(dir_fd):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _clear(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


def _copy(src_fd, dst_fd, depth=0):
    if depth > 64:
        return
    for name in os.listdir(src_fd):
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o755, dir_fd=dst_fd)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst_fd)
            try:
                _copy(s, d, depth + 1)
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISREG(st.st_mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=src_fd)
            try:
                if not stat.S_ISREG(os.fstat(s).st_mode):
                    continue
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dst_fd)
                try:
                    left = os.fstat(s).st_size  # a file a dying sandbox still appends to is copied as it was
                    while left > 0:
                        chunk = os.read(s, min(left, 1 << 20))
                        if not chunk:
                            break
                        os.write(d, chunk)
                        left -= len(chunk)
                finally:
                    os.close(d)
            finally:
                os.close(s)


def _drop_staging(staging):
    libc.umount2(os.fsencode(staging), MNT_DETACH)
    try:
        os.rmdir(staging)
    except OSError:
        pass


def take_down(workspace, staging):
    if workspace == staging:  # a warm worker's tmpfs, never put over a workspace
        _drop_staging(staging)
        return
    try:
        ours = os.stat(workspace).st_dev == os.stat(staging).st_dev and is_mount_point(staging)
        bare = not is_mount_point(workspace)  # not bound yet, or the parent died while releasing it
    except OSError:
        ours = bare = False
    if ours:
        libc.umount2(os.fsencode(workspace), MNT_DETACH)
    if (ours or bare) and is_mount_point(staging):  # else: something else is mounted on top now: leave that alone
        try:
            src = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            dst = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                _clear(dst)
                _copy(src, dst)
            finally:
                os.close(src)
                os.close(dst)
        except (OSError, RecursionError) as e:
            notes.append(f"mmat quota keeper: could not restore {workspace} from {staging}: {e}")
    _drop_staging(staging)


def _timeout(*_):
    raise TimeoutError


def say_notes():
    """The notes, on a stderr that may be a pipe nobody reads any more: bounded in time, never fatal."""
    if not notes:
        return
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(NOTE_TIMEOUT_S)
    try:
        sys.stderr.write("\n".join(notes) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, TimeoutError):
        pass
    finally:
        signal.alarm(0)


def main():
    mounts = {}  # insertion order = the order the parent made them
    for raw in sys.stdin.buffer:
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if msg.get("op") == "add":
            mounts.pop(msg["workspace"], None)
            mounts[msg["workspace"]] = msg["staging"]
        elif msg.get("op") == "del":
            mounts.pop(msg["workspace"], None)
    if mounts:
        time.sleep(GRACE_S)
    for workspace, staging in reversed(list(mounts.items())):
        try:  # one mount that cannot be restored must not leave the others mounted
            take_down(workspace, staging)
        except Exception as e:  # noqa: BLE001 - reported, then the next mount
            notes.append(f"mmat quota keeper: could not take down {workspace}: {type(e).__name__}: {e}")
    say_notes()


if __name__ == "__main__":
    main()
