"""Builds one sandbox and supervises its worker. Runs as root, started by the parent as
``python -I -S _launcher.py`` with a JSON config on stdin; standard library only.

Steps (see mmat.sandbox.sandbox for the isolation this buys):
 1. open the mount sources (O_PATH fds) while the host filesystem is still visible;
 2. unshare mount, network, IPC, UTS and PID namespaces; make every mount private;
 3. build a new root on a tmpfs: read-only binds of /usr, the Python runtime and the venv, the
    workspace read-write at /workspace, a private /tmp, a minimal /dev; write /.mmat/worker.py;
    remount the root read-only; pivot_root into it and detach the old root;
 4. fork the namespace's init (PID 1: mounts /proc with hidepid=2, reaps orphans, and takes every
    sandbox process down with it when the launcher goes away);
 5. fork the worker: rlimits, empty bounding set, setgroups([]) + setresgid/setresuid to the
    sandbox's own uid, no_new_privs, seccomp filter, exec ``python -I -S -B /.mmat/worker.py``;
 6. report ``started`` (host pids) on stdout, then wait: stdin EOF or ``kill`` -> kill the sandbox;
    worker exit -> report its status and CPU time, kill the sandbox, exit.
"""

import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x04000000, 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 24, 38, 22
SECCOMP_MODE_FILTER = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
NEW_ROOT = "/tmp"  # any existing directory: sources are reached through fds, so shadowing it is harmless
DEV_NODES = ("null", "zero", "full", "random", "urandom")

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(s):
    return None if s is None else s.encode()


def mount(source, target, fstype, flags, data=None):
    _check(libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)), f"mount {source} on {target}")


def prctl(option, arg2=0):
    _check(libc.prctl(option, arg2, 0, 0, 0), f"prctl({option})")


def bind(fd, target, *, readonly):
    """Bind the object behind an O_PATH fd on target, then remount with nosuid/nodev (+ ro)."""
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0)
    mount(None, target, None, flags)


def build_root(cfg):
    """Steps 1-3: new namespaces, the new root, then pivot into it."""
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Sources as fds, opened in the new mount namespace (a bind from a mount of another namespace
    # is refused) and before the new root is mounted over NEW_ROOT, which may contain some of them.
    src_fds = [os.open(b["src"], os.O_PATH | os.O_CLOEXEC) for b in cfg["binds"]]
    dev_fds = [os.open(f"/dev/{n}", os.O_PATH | os.O_CLOEXEC) for n in DEV_NODES]
    root = NEW_ROOT
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    # private /tmp and a minimal /dev first: the binds below may live under /tmp (a venv in a checkout
    # under /tmp, as CI may use) and must land on top of the private tmpfs, not be hidden by it.
    for path, mode in (("/tmp", "1777"), ("/dev", "0755")):
        os.makedirs(root + path, exist_ok=True)
        size = cfg["tmp_bytes"] if path == "/tmp" else 65536
        mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
    for item, fd in zip(cfg["binds"], src_fds):
        target = root + item["dst"]
        if item["kind"] == "dir":
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            open(target, "a").close()
        bind(fd, target, readonly=not item.get("rw", False))
    for link in cfg["symlinks"]:
        os.symlink(link["target"], root + link["path"])
    for name, fd in zip(DEV_NODES, dev_fds):
        open(f"{root}/dev/{name}", "a").close()
        mount(f"/proc/self/fd/{fd}", f"{root}/dev/{name}", None, MS_BIND)
        mount(None, f"{root}/dev/{name}", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC)
    os.makedirs(root + "/dev/shm")
    mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmp_bytes']},mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", exist_ok=True)
    os.makedirs(root + "/.mmat", exist_ok=True)
    with open(root + "/.mmat/worker.py", "w") as f:
        f.write(cfg["worker_source"])
    os.chmod(root + "/.mmat/worker.py", 0o444)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    _check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    for fd in src_fds + dev_fds:
        os.close(fd)


def close_fds_except(keep):
    """Close every fd above 2 except `keep` (the launcher holds only a handful)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 4096)


def init_main(life_r, ready_w):
    """PID 1 of the sandbox: mount /proc, reap orphans, exit (killing the namespace) when the launcher is gone."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    close_fds_except({life_r, ready_w})
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)

    def reap(*_):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    signal.signal(signal.SIGCHLD, reap)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    os.write(ready_w, b"1")
    os.close(ready_w)
    while True:
        try:
            if not os.read(life_r, 1):  # EOF: the launcher died; PID 1 exiting kills the namespace
                os._exit(0)
        except InterruptedError:
            continue


def worker_exec(cfg, chan_in, chan_out, seccomp_prog):
    """In the worker child: drop everything, then exec the worker. Never returns."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    import resource

    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    # fds: 0 /dev/null, 1 /dev/null, 2 launcher stderr (start-up errors), 3 channel in, 4 channel out
    hi_in, hi_out = fcntl.fcntl(chan_in, fcntl.F_DUPFD, 10), fcntl.fcntl(chan_out, fcntl.F_DUPFD, 10)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(hi_in, 3)
    os.dup2(hi_out, 4)
    os.closerange(5, 65536)
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break
    uid, gid = cfg["uid"], cfg["gid"]
    os.setsid()  # its own session and process group: killpg(0, ...) reaches only the sandbox
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.chdir("/workspace")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if seccomp_prog is not None:
        buf = ctypes.create_string_buffer(seccomp_prog)
        prog = struct.pack("HxxxxxxQ", len(seccomp_prog) // 8, ctypes.addressof(buf))
        prog_buf = ctypes.create_string_buffer(prog)
        _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog_buf), 0, 0), "seccomp")
    os.execve(cfg["python"], cfg["argv"], cfg["env"])


def report(event):
    os.write(1, (json.dumps(event) + "\n").encode())


def supervise(init_pid, worker_pid):
    """Step 6: wait for the parent (stdin) or the worker to finish; always take the sandbox down."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    worker_status = None
    while worker_status is None:
        ready, _, _ = select.select([0, wake_r], [], [])
        if 0 in ready:
            data = os.read(0, 4096)
            if not data or b"kill" in data:
                break
        if wake_r in ready:
            os.read(wake_r, 4096)
            pid, status, usage = os.wait4(worker_pid, os.WNOHANG)
            if pid == worker_pid:
                worker_status = (status, usage)
            elif os.waitpid(init_pid, os.WNOHANG)[0] == init_pid:
                init_pid = None
                break
    for pid in (init_pid, worker_pid if worker_status is None else None):
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if worker_status is None:
        _, status, usage = os.wait4(worker_pid, 0)
        event = "stopped"
    else:
        status, usage = worker_status
        event = "exit"
    if init_pid is not None:
        os.waitpid(init_pid, 0)
    report(
        {
            "event": event,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "maxrss_kb": usage.ru_maxrss,
        }
    )


def main():
    cfg = json.loads(sys.stdin.buffer.readline())
    chan_in, chan_out = cfg["chan_fds"]
    seccomp_prog = bytes.fromhex(cfg["seccomp_hex"]) if cfg.get("seccomp_hex") else None
    build_root(cfg)
    life_r, life_w = os.pipe()
    ready_r, ready_w = os.pipe()
    init_pid = os.fork()
    if init_pid == 0:
        try:
            init_main(life_r, ready_w)
        finally:
            os._exit(1)
    os.close(life_r)
    os.close(ready_w)
    if os.read(ready_r, 1) != b"1":
        raise RuntimeError("the sandbox's init process failed to mount /proc")
    os.close(ready_r)
    worker_pid = os.fork()
    if worker_pid == 0:
        try:
            os.close(life_w)
            worker_exec(cfg, chan_in, chan_out, seccomp_prog)
        except BaseException:  # noqa: BLE001 - report why the worker could not start, then die
            import traceback

            sys.stderr.write("mmat sandbox: worker setup failed:\n" + traceback.format_exc())
            sys.stderr.flush()
        finally:
            os._exit(127)
    os.close(chan_in)
    os.close(chan_out)
    report({"event": "started", "init_pid": init_pid, "worker_pid": worker_pid})
    supervise(init_pid, worker_pid)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - the parent turns this into a SandboxError
        if not isinstance(e, SystemExit):
            import traceback

            report({"event": "error", "message": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            sys.exit(1)
        raise
