"""Builds one sandbox and supervises its worker; standard library only. Runs as root (mode "root")
or as the calling user, who becomes privileged only inside a new user namespace (mode "rootless";
see mmat.sandbox.modes).

How it starts: the parent runs one **zygote** per process (``python -I -S -B -c <bootstrap>``; the
code of this file arrives on stdin, so no host path shows in any /proc/*/cmdline), which compiles
the worker's code, imports the worker's modules and then serves launch requests on a socketpair:
each request (a JSON config plus five fds: the launcher's stdin/stdout/stderr and the worker's
channel) gets a fork of the zygote that becomes that sandbox's launcher, and the parent gets a
pidfd for it. Without a zygote (no pidfd support) the launcher is started the same way on its
own, with its config after its code on stdin. Either way no interpreter starts per sandbox twice:
the worker is a fork of the launcher, not an exec.

Steps (see mmat.sandbox.sandbox for the isolation this buys):
 1. open the cgroup files and the mount sources (fds) while the host filesystem is still visible;
 2. rootless: unshare a user namespace that maps only the caller (to the sandbox's inner uid/gid,
    setgroups denied); then unshare mount, network, IPC, UTS and PID namespaces; every mount private;
 3. build a new root on a tmpfs: read-only binds of /usr, the Python runtime and the venv, the
    workspace read-write at /workspace (root mode: a bind of the host's quota tmpfs; rootless: a
    tmpfs of the quota's size mounted here, its root's fd sent to the parent), a private /tmp, a
    minimal /dev; write /.mmat/worker.py;
 4. fork the namespace's init (PID 1: mounts /proc with hidepid=2 while a full /proc is still
    visible, as a user namespace requires; reaps orphans; stops and continues the sandbox when there
    is no cgroup freezer; takes every sandbox process down with it when the launcher goes away);
 5. remount the root read-only, pivot_root into it and detach the old root;
 6. fork the worker: join the sandbox's cgroups, rlimits, empty bounding set, setgroups([]) (root
    mode) + setresgid/setresuid to the sandbox's own uid, every capability set emptied (no execve
    clears them here), no_new_privs, the sandbox's own environment, seccomp; then run the worker's
    pre-compiled code (``/.mmat/worker.py``) as ``__main__``;
 7. report ``started`` (host pids) on stdout, then serve stdin: ``freeze``/``thaw`` -> stop or
    continue every process of the sandbox and report ``frozen``/``thawed``; EOF or ``kill`` -> kill
    the sandbox; worker exit -> report its status and CPU time, kill the sandbox, exit.
"""

import builtins
import ctypes
import errno
import fcntl
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import types

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 24, 38, 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
WORKER_PATH = "/.mmat/worker.py"
WORKER_CODE = WORKER_SOURCE = None  # the worker's (compiled) source: run by the forked worker, see worker_start
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
NEW_ROOT = "/tmp"  # any existing directory: sources are reached through fds, so shadowing it is harmless
DEV_NODES = ("null", "zero", "full", "random", "urandom")
# Flags a bind inherits from its source mount; inside a user namespace they are locked, so a remount
# must repeat them (statvfs ST_RDONLY/NOSUID/NODEV/NOEXEC have the values of the MS_ flags).
_LOCKABLE = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
# How long a SIGSTOP freeze may take before the sandbox counts as unfreezable (the parent restarts it).
FREEZE_TIMEOUT_S = 2.0

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


def bind(fd, target, *, readonly, flags=MS_NOSUID | MS_NODEV):
    """Bind the object behind an O_PATH fd on target, then remount with `flags` (+ ro), keeping the
    source mount's own restrictions (a user namespace refuses to drop them)."""
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    inherited = os.fstatvfs(fd).f_flag & _LOCKABLE
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags | inherited | (MS_RDONLY if readonly else 0))


def enter_user_namespace(userns):
    """Rootless: a new user namespace in which only the caller exists, as the sandbox's inner uid/gid.
    The launcher keeps full capabilities inside it (it created it) until it execs, which it never does."""
    _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")  # required before an unprivileged gid_map; also means setgroups() fails inside
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{userns['uid']} {userns['outer_uid']} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{userns['gid']} {userns['outer_gid']} 1")


def prepare_root(cfg):
    """Steps 2-3: new namespaces and the new root's contents (not yet read-only, not yet pivoted)."""
    if cfg.get("userns"):
        enter_user_namespace(cfg["userns"])
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
    scaffolds = tmp_scaffolds([b["dst"] for b in cfg["binds"]])
    for path in scaffolds:
        os.makedirs(root + path)
        mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for item, fd in zip(cfg["binds"], src_fds):
        target = root + item["dst"]
        if item["kind"] == "dir":
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            open(target, "a").close()
        bind(fd, target, readonly=not item.get("rw", False))
    for path in scaffolds:  # never a bind's own path: remounting that would remount its source
        mount(None, root + path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for link in cfg["symlinks"]:
        os.symlink(link["target"], root + link["path"])
    for name, fd in zip(DEV_NODES, dev_fds):
        open(f"{root}/dev/{name}", "a").close()
        bind(fd, f"{root}/dev/{name}", readonly=False, flags=MS_NOSUID | MS_NOEXEC)
    os.makedirs(root + "/dev/shm")
    mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmp_bytes']},mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    if cfg.get("workspace_tmpfs"):
        mount_workspace_tmpfs(cfg["workspace_tmpfs"], root + "/workspace", cfg["fd_sock"])
    os.makedirs(root + "/proc", exist_ok=True)
    os.makedirs(root + "/.mmat", exist_ok=True)
    with open(root + "/.mmat/worker.py", "w") as f:
        f.write(cfg["worker_source"])
    os.chmod(root + "/.mmat/worker.py", 0o444)
    for fd in src_fds + dev_fds:
        os.close(fd)
    # init is forked with this as its working directory, so nothing of it points at the old root
    os.chdir(root)


def tmp_scaffolds(dsts):
    """Where the mount points of binds under /tmp are made: a tmpfs of their own on each first
    component of /tmp above a bind, read-only once the binds are in. Made on the private /tmp itself,
    those directories would belong to the worker's uid in rootless mode, and the worker could write
    beside the runtime (a checkout under /tmp would look writable from inside, though nothing written
    there reaches the host)."""
    tops = {"/tmp/" + d[len("/tmp/"):].split("/")[0] for d in dsts if d.startswith("/tmp/")}
    return sorted(tops - set(dsts))


def mount_workspace_tmpfs(spec, target, sock_fd):
    """Rootless mode: the workspace is a tmpfs of the quota's size and inode count, mounted here in the
    sandbox's own mount namespace (the launcher holds CAP_SYS_ADMIN over it, not over the host's).
    Its root's fd goes to the parent over sock_fd (SCM_RIGHTS): the parent fills it with the
    workspace's files, works on it through that fd, and copies it back to the directory on close."""
    import socket

    os.makedirs(target, exist_ok=True)
    mount("mmat-workspace", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['size']},nr_inodes={spec['nr_inodes']},mode=0700")
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [b"workspace"], [fd])
    finally:
        sock.close()
        os.close(fd)


def finish_root():
    """Step 5: the root becomes read-only, then the only root there is."""
    root = NEW_ROOT
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    _check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def close_fds_except(keep):
    """Close every fd above 2 except `keep` (the launcher holds only a handful)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 4096)


def _all_stopped():
    """True when every task of every other process in this PID namespace is stopped (or dead)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        try:
            tids = os.listdir(f"/proc/{entry}/task")
        except OSError:
            continue  # gone
        for tid in tids:
            try:
                with open(f"/proc/{entry}/task/{tid}/stat", "rb") as f:
                    state = f.read().rpartition(b")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state not in (b"T", b"t", b"Z", b"X"):
                return False
    return True


def _signal_all(sig):
    try:
        os.kill(-1, sig)  # every process of this PID namespace but init itself, atomically w.r.t. fork
    except ProcessLookupError:
        pass


def init_main(ctl_r, reply_w):
    """PID 1 of the sandbox: mount /proc, reap orphans, exit (killing the namespace) when the launcher
    is gone. Without a cgroup freezer it also freezes the sandbox: ``S`` -> SIGSTOP to every process of
    the namespace, wait until every thread is stopped, answer ``s`` (``!`` if that took too long);
    ``C`` -> SIGCONT, answer ``c``. Sandboxed code cannot send SIGCONT (seccomp), so what is stopped
    stays stopped until init continues it."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_DUMPABLE, 0)  # rootless: the worker has init's uid; this keeps it out of /proc/1/mem
    close_fds_except({ctl_r, reply_w})
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)

    signal.signal(signal.SIGCHLD, _reap)
    mount("proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    os.write(reply_w, b"1")
    while True:
        try:
            cmd = os.read(ctl_r, 1)
        except InterruptedError:
            continue
        if not cmd:  # EOF: the launcher died; PID 1 exiting kills the namespace
            os._exit(0)
        if cmd == b"S":
            _signal_all(signal.SIGSTOP)
            deadline = time.monotonic() + FREEZE_TIMEOUT_S
            while not _all_stopped():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.0002)
            else:
                os.write(reply_w, b"s")
                continue
            os.write(reply_w, b"!")
        elif cmd == b"C":
            _signal_all(signal.SIGCONT)
            os.write(reply_w, b"c")


def drop_capabilities():
    """Empty every capability set of this process (effective, permitted, inheritable, ambient). The
    worker is forked, not exec'd, so no execve() clears them: in rootless mode the launcher holds
    full capabilities in its user namespace and a same-uid setresuid() would keep them."""
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(struct.calcsize("III") * 2)  # two zeroed __user_cap_data_struct
    _check(libc.capset(ctypes.c_char_p(header), data), "capset")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")


def worker_start(cfg, chan_in, chan_out, seccomp_prog, join_fds):
    """In the worker child: join the sandbox's cgroups, drop everything, then run the worker's code
    (already compiled and its modules imported by the launcher: no second interpreter start). Never returns."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for fd in join_fds:
        os.write(fd, b"0")  # "0": the writing process itself; its children inherit the cgroup
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
    if not cfg.get("userns"):
        os.setgroups([])  # in a user namespace setgroups is denied (and the host's groups are unmapped)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    drop_capabilities()
    prctl(PR_SET_DUMPABLE, 1)  # as after an execve(): the uid change made it non-dumpable
    os.chdir("/workspace")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    # the environment is the sandbox's own (sandbox_env), nothing of the launcher's
    os.environ.clear()
    os.environ.update(cfg["env"])
    sys.argv[:] = [WORKER_PATH]
    sys.orig_argv[:] = [cfg["python"], "-I", "-S", "-B", WORKER_PATH]
    module = types.ModuleType("__main__")
    module.__file__ = WORKER_PATH
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    code = WORKER_CODE
    cfg.clear()
    if seccomp_prog is not None:
        buf = ctypes.create_string_buffer(seccomp_prog)
        prog = struct.pack("HxxxxxxQ", len(seccomp_prog) // 8, ctypes.addressof(buf))
        prog_buf = ctypes.create_string_buffer(prog)
        _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog_buf), 0, 0), "seccomp")
    try:
        exec(code, module.__dict__)  # noqa: S102 - the worker's own source (mmat/sandbox/_worker.py), never model code
    except SystemExit as e:
        sys.stdout.flush()
        os._exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
    os._exit(0)


def report(event):
    os.write(1, (json.dumps(event) + "\n").encode())


class Freezer:
    """Without a cgroup freezer: stops and continues every process of the sandbox with SIGSTOP/SIGCONT
    sent by the sandbox's init to its whole PID namespace. (A cgroup freezer is driven by the parent
    itself; for a v1 one the launcher keeps its files, opened before the pivot, to kill it frozen.)"""

    def __init__(self, spec):
        self.kind = spec["kind"]
        self.fds = {key: os.open(spec[key], (os.O_RDONLY if key == "procs" else os.O_RDWR) | os.O_CLOEXEC) for key in ("state", "procs") if key in spec}
        self.ctl_w = self.reply_r = None

    def attach_init(self, ctl_w, reply_r):
        self.ctl_w, self.reply_r = ctl_w, reply_r

    def _ask_init(self, cmd, ok):
        os.write(self.ctl_w, cmd)
        ready, _, _ = select.select([self.reply_r], [], [], FREEZE_TIMEOUT_S + 1)
        return bool(ready) and os.read(self.reply_r, 1) == ok

    def freeze(self):
        return self.kind == "signal" and self._ask_init(b"S", b"s")

    def thaw(self):
        return self.kind == "signal" and self._ask_init(b"C", b"c")

    def before_kill(self):
        """v1 freezer: frozen tasks ignore SIGKILL until thawed, so kill them first, then thaw (they die
        without running another instruction). v2 and SIGSTOP'd tasks die of SIGKILL as they are."""
        if self.kind != "cgroup1" or os.pread(self.fds["state"], 64, 0).startswith(b"THAWED"):
            return
        for pid in os.pread(self.fds["procs"], 1 << 20, 0).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        os.pwrite(self.fds["state"], b"THAWED", 0)


def supervise(init_pid, worker_pid, freezer):
    """Step 7: serve the parent's commands (stdin) until it says kill or the worker finishes; always
    take the sandbox down."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    worker_status = None
    pending = b""
    stop = False
    while worker_status is None and not stop:
        ready, _, _ = select.select([0, wake_r], [], [])
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line == b"freeze":
                    t0 = time.perf_counter()
                    ok = freezer.freeze()
                    report({"event": "frozen" if ok else "freeze_failed", "us": (time.perf_counter() - t0) * 1e6})
                elif line == b"thaw":
                    t0 = time.perf_counter()
                    ok = freezer.thaw()
                    report({"event": "thawed" if ok else "thaw_failed", "us": (time.perf_counter() - t0) * 1e6})
                else:  # "kill" or anything unknown
                    stop = True
                    break
        if wake_r in ready:
            os.read(wake_r, 4096)
            pid, status, usage = os.wait4(worker_pid, os.WNOHANG)
            if pid == worker_pid:
                worker_status = (status, usage)
            elif os.waitpid(init_pid, os.WNOHANG)[0] == init_pid:
                init_pid = None
                break
    freezer.before_kill()
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


def prepare_worker(source, imports):
    """The worker runs in a fork of this process: its code is compiled and its modules imported
    before any namespace exists (once per zygote, or once per launcher without one)."""
    global WORKER_CODE, WORKER_SOURCE
    WORKER_CODE, WORKER_SOURCE = compile(source, WORKER_PATH, "exec"), source
    for name in imports:
        __import__(name)


def launch(cfg):
    """Steps 1-7 for one sandbox; returns when the sandbox is gone."""
    chan_in, chan_out = cfg["chan_fds"]
    seccomp_prog = bytes.fromhex(cfg["seccomp_hex"]) if cfg.get("seccomp_hex") else None
    cgroups = cfg.get("cgroups") or {"join": [], "freezer": {"kind": "signal"}}
    # cgroupfs is not visible after the pivot: open now what the worker and the freezer will need
    join_fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in cgroups["join"]]
    freezer = Freezer(cgroups["freezer"])
    prepare_root(cfg)
    ctl_r, ctl_w = os.pipe()
    reply_r, reply_w = os.pipe()
    init_pid = os.fork()
    if init_pid == 0:
        try:
            init_main(ctl_r, reply_w)
        finally:
            os._exit(1)
    os.close(ctl_r)
    os.close(reply_w)
    if os.read(reply_r, 1) != b"1":
        raise RuntimeError("the sandbox's init process failed to mount /proc")
    finish_root()
    freezer.attach_init(ctl_w, reply_r)
    worker_pid = os.fork()
    if worker_pid == 0:
        try:
            os.close(ctl_w)
            os.close(reply_r)
            worker_start(cfg, chan_in, chan_out, seccomp_prog, join_fds)
        except BaseException:  # noqa: BLE001 - report why the worker could not start, then die
            import traceback

            sys.stderr.write("mmat sandbox: worker setup failed:\n" + traceback.format_exc())
            sys.stderr.flush()
        finally:
            os._exit(127)
    for fd in (chan_in, chan_out, *join_fds):
        os.close(fd)
    report({"event": "started", "init_pid": init_pid, "worker_pid": worker_pid})
    supervise(init_pid, worker_pid, freezer)


def report_failure(e):
    import traceback

    report({"event": "error", "message": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


# --- zygote: one per parent process, forks a ready launcher per sandbox --------------------------
ZYGOTE_MAX_REQUEST = 1 << 20
# a request's fds: the launcher's stdin, stdout, stderr, then the worker channel (in, out); rootless
# mode adds a sixth, the socket the workspace tmpfs's fd is sent back on
ZYGOTE_REQUEST_FDS = 5


def zygote_child(sock_fd, request, fds):
    """In a fresh fork of the zygote: become the launcher of one sandbox, as if started by the parent."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the launcher waits for its own children
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.setsid()  # signals to the zygote's (or the parent's) process group do not reach sandboxes
    os.close(sock_fd)
    for target, fd in zip((0, 1, 2), fds[:3]):
        os.dup2(fd, target)
    for fd in fds[:3]:
        if fd > 2:
            os.close(fd)
    try:
        cfg = json.loads(request)
        cfg["chan_fds"] = list(fds[3:5])  # this process's numbers for the channel, not the parent's
        if len(fds) > ZYGOTE_REQUEST_FDS:
            cfg["fd_sock"] = fds[ZYGOTE_REQUEST_FDS]  # rootless: where the workspace tmpfs's fd goes
        cfg["worker_source"] = WORKER_SOURCE
        launch(cfg)
    except BaseException as e:  # noqa: BLE001 - the parent turns this into a SandboxError
        if not isinstance(e, SystemExit):
            report_failure(e)
            os._exit(1)
    os._exit(0)


def _reap(*_):
    """SIGCHLD: reap every exited child (init's orphans, the zygote's launchers)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def zygote_main(setup):
    """Serve launch requests until the parent closes the socket. Each request (a launcher config as
    JSON, with its 5 fds) gets a fork of this pre-imported process; the answer is the child's pid
    and a pidfd for it, through which the parent waits for and kills its launcher. SIGCHLD is
    blocked from fork() until the pidfd exists, so the child cannot be reaped (and its pid reused)
    before that."""
    import socket

    prepare_worker(setup["worker_source"], setup["worker_imports"])
    sock_fd = setup["sock_fd"]
    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGCHLD, _reap)
    os.write(1, b"ready\n")
    while True:
        request, fds, _, _ = socket.recv_fds(sock, ZYGOTE_MAX_REQUEST, ZYGOTE_REQUEST_FDS + 1)
        if not request:
            os._exit(0)  # the parent is gone
        if len(fds) not in (ZYGOTE_REQUEST_FDS, ZYGOTE_REQUEST_FDS + 1):
            for fd in fds:
                os.close(fd)
            sock.send(b"error: expected 5 or 6 fds")
            continue
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    zygote_child(sock_fd, request, fds)
                finally:
                    os._exit(1)
            for fd in fds:
                os.close(fd)
            pidfd = os.pidfd_open(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        try:
            socket.send_fds(sock, [b"%d" % pid], [pidfd])
        finally:
            os.close(pidfd)


def main():
    cfg = json.loads(sys.stdin.buffer.readline())
    if cfg.get("zygote"):
        zygote_main(cfg)
        return
    prepare_worker(cfg["worker_source"], cfg["worker_imports"])
    launch(cfg)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - the parent turns this into a SandboxError
        if not isinstance(e, SystemExit):
            report_failure(e)
            sys.exit(1)
        raise
