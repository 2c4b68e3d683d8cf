"""Takes the workspace quota mounts down if the mmat process dies without closing its sandboxes.

Started once per parent process (root mode) as ``python -I -S -B _quota_keeper.py`` in its own
session; standard library only. The parent writes JSON lines: ``{"op": "add", "workspace": ...,
"staging": ...}`` when it mounts a quota tmpfs, ``{"op": "del", "workspace": ...}`` once released.
On EOF (the parent exited or was killed) every mount still listed is taken down the way
Sandbox.close() would: after a grace period for the
launchers to kill their sandboxes, the workspace is unmounted, the directory underneath is emptied
and refilled from the tmpfs (regular files and directories only, never following a link), then the
tmpfs is unmounted and its staging directory removed.
"""

import ctypes
import json
import os
import stat
import sys
import time

MNT_DETACH = 2
# The launchers notice the parent's death on their stdin and kill their sandboxes within milliseconds;
# a sandbox still alive meanwhile cannot mislead the copy (no link is followed, the destination is
# invisible to it), so the wait is short: a caller re-running at once must find its directory back.
GRACE_S = 0.1

libc = ctypes.CDLL(None, use_errno=True)
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


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
                    while True:
                        chunk = os.read(s, 1 << 20)
                        if not chunk:
                            break
                        os.write(d, chunk)
                finally:
                    os.close(d)
            finally:
                os.close(s)


def _say(text):
    """A note on stderr, which may be a pipe nobody reads any more (the parent is gone): never fatal."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def take_down(workspace, staging):
    try:
        ours = os.stat(workspace).st_dev == os.stat(staging).st_dev
    except OSError:
        ours = False
    if not ours:  # released already, or something else is mounted on top now: leave that alone
        libc.umount2(os.fsencode(staging), MNT_DETACH)
        try:
            os.rmdir(staging)
        except OSError:
            pass
        return
    libc.umount2(os.fsencode(workspace), MNT_DETACH)
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
        _say(f"mmat quota keeper: could not restore {workspace} from {staging}: {e}")
    libc.umount2(os.fsencode(staging), MNT_DETACH)
    try:
        os.rmdir(staging)
    except OSError:
        pass


def main():
    mounts = {}
    for raw in sys.stdin.buffer:
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if msg.get("op") == "add":
            mounts[msg["workspace"]] = msg["staging"]
        elif msg.get("op") == "del":
            mounts.pop(msg["workspace"], None)
    if mounts:
        time.sleep(GRACE_S)
    for workspace, staging in mounts.items():
        try:  # one mount that cannot be restored must not leave the others mounted
            take_down(workspace, staging)
        except Exception as e:  # noqa: BLE001 - reported, then the next mount
            _say(f"mmat quota keeper: could not take down {workspace}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
