"""The seccomp filter every sandbox worker runs under, compiled once per process with pyseccomp.

Default: allow. Denied with EPERM: everything that could leave or reshape the sandbox (mount and the
new mount API, pivot_root, chroot, unshare, setns, namespace flags on clone), inspect or modify other
processes (ptrace, process_vm_*, pidfd_getfd, kcmp), reach the kernel's attack surface far beyond what
Python code needs (bpf, perf_event_open, userfaultfd, io_uring, keyctl, module and kexec calls), or
change the machine (reboot, swapon, acct, clock setting). ``socket`` for any family but AF_UNIX fails
with EAFNOSUPPORT (the network namespace already has no route anywhere; this also stops netlink and
raw sockets). ``clone3`` fails with ENOSYS so glibc falls back to ``clone``, whose flags a filter can
inspect. Sending SIGCONT (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_send_signal)
fails with EPERM, and so does any signal to pid 1 (the sandbox's init) or a pidfd for it: between steps the sandbox is stopped, and where that is done with SIGSTOP (no
writable cgroup freezer) nothing inside may continue a stopped process; only the sandbox's init can.
Syscalls of other ABIs (i386 via int 0x80, x32) kill the process (libseccomp's default).

Processes themselves are allowed: numpy, matplotlib and subprocess need fork/clone/execve, and they
are contained by the PID namespace, RLIMIT_NPROC on the sandbox's own uid and the per-step cleanup.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from functools import lru_cache

from mmat.errors import SandboxError

__all__ = ["seccomp_program", "DENIED_SYSCALLS"]

DENIED_SYSCALLS = (
    # leaving or reshaping the sandbox
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # kernel attack surface
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "lookup_dcookie", "quotactl",
    # the machine
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "vhangup",
)  # fmt: skip

# Signal-sending syscalls and the index of their signal argument (SIGCONT is refused in all of them).
_SIGNAL_ARG = {"kill": 1, "tkill": 1, "tgkill": 2, "rt_sigqueueinfo": 1, "rt_tgsigqueueinfo": 2, "pidfd_send_signal": 1}
# clone flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


@lru_cache(maxsize=1)
def seccomp_program() -> bytes:
    """The BPF program (struct sock_filter[]) that the launcher installs with prctl(PR_SET_SECCOMP)."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as e:  # RuntimeError: libseccomp.so.2 not found
        raise SandboxError(
            f"seccomp is unavailable ({e}): install pyseccomp==0.1.2 and the libseccomp2 system package."
        ) from None
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # a syscall this architecture does not have
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in _NAMESPACE_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for name, index in _SIGNAL_ARG.items():
        f.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(index, sc.EQ, int(signal.SIGCONT)))
        if name != "pidfd_send_signal":  # its first argument is an fd: pidfd_open(1) is refused below
            # the sandbox's init (pid 1): in rootless mode it has the worker's uid, so refuse it explicitly
            f.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.EQ, 1))
    f.add_rule(sc.ERRNO(errno.EPERM), "pidfd_open", sc.Arg(0, sc.EQ, 1))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    # export_bpf writes to a file descriptor: an in-memory file avoids touching the disk.
    with os.fdopen(os.memfd_create("mmat-seccomp"), "w+b") as mem:
        f.export_bpf(mem)
        mem.seek(0)
        return mem.read()
