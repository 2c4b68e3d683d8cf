"""Hostile code: every case asserts the concrete outcome (blocked), that the parent is unharmed, and
that the sandbox still runs the next step.

Network checks use loopback only: listeners opened by the test on 127.0.0.1 / a Unix socket in the
test's tmp dir. DNS is tried on a `.invalid` name inside the sandbox, where no packet can leave.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import mmat
from mmat.sandbox import Limits, Sandbox, runtime

from .helpers import FAST, ROOTLESS, FakeTools, alive, needs_root, view

pytestmark = needs_root

REPO = Path(mmat.__file__).resolve().parents[1]


def sandbox_processes(sb: Sandbox) -> list[int]:
    """Host pids of the live (non-zombie) processes in sb's PID namespace, its init excluded. By
    namespace, not by uid: in rootless mode the worker's host uid is the test runner's own."""
    ns = os.readlink(f"/proc/{sb.worker_pid}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue  # gone, or init (not dumpable: its /proc entries are closed to the sandbox's owner)
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("NSpid", "").split()[-1:] != ["1"] and not fields.get("State", "").strip().startswith("Z"):
            pids.append(int(entry))
    return pids


class TestHostileCode:
    # --- filesystem: reads -----------------------------------------------------------------------
    def test_read_etc_passwd(self, sandbox):
        r = sandbox.run("print(open('/etc/passwd').read())")
        assert r.error.type == "FileNotFoundError" and "root:x:0:0" not in r.stdout
        r = sandbox.run("import os\nprint(sorted(os.listdir('/etc')))")
        assert r.stdout.strip() in ("['fonts', 'ld.so.cache']", "['ld.so.cache']", "['fonts']", "[]")
        alive(sandbox)

    def test_read_root_home(self, sandbox):
        host_entries = sorted(os.listdir("/root"))
        runtime = {p.split("/")[2] for p in (os.path.realpath(mmat.sandbox.runtime.sys.base_prefix),) if p.startswith("/root/")}
        hidden = [e for e in host_entries if e not in runtime]
        r = sandbox.run(f"import os\nprint([e for e in {hidden!r} if os.path.lexists('/root/' + e)])")
        assert r.error is None and r.stdout == "[]\n"
        alive(sandbox)

    def test_read_the_repository(self, sandbox):
        code = (
            f"import os\nrepo = {str(REPO)!r}\n"
            "print(os.path.exists(repo + '/pyproject.toml'), os.path.exists(repo + '/mmat'), os.path.exists(repo + '/.git'))\n"
            "print(open(repo + '/mmat/config.py').read())"
        )
        r = sandbox.run(code)
        assert r.stdout == "False False False\n"
        assert r.error.type == "FileNotFoundError"
        alive(sandbox)

    def test_read_mmat_home_and_host_tmp(self, sandbox, mmat_home, tmp_path):
        (mmat_home / "secret.txt").write_text("do-not-leak")
        (tmp_path / "host_tmp_secret.txt").write_text("do-not-leak")
        code = (
            "import os\n"
            f"paths = [{str(mmat_home / 'secret.txt')!r}, {str(tmp_path / 'host_tmp_secret.txt')!r}, {str(tmp_path)!r}]\n"
            "print([os.path.exists(p) for p in paths], os.listdir('/tmp'))"
        )
        r = sandbox.run(code)
        assert r.stdout.startswith("[False, False, False]")
        assert "MMAT_HOME" not in sandbox.run("import os\nprint(dict(os.environ))").stdout
        alive(sandbox)

    # --- filesystem: writes ----------------------------------------------------------------------
    def test_write_outside_the_workspace(self, sandbox, tmp_path):
        marker = f"mmat-hostile-{os.getpid()}-{time.time_ns()}"
        code = (
            "import errno\nresults = {}\n"
            f"for path in ['/etc/x', '/usr/x', '/x', {str(REPO / marker)!r}, {str(tmp_path / marker)!r}, '/proc/sys/kernel/hostname']:\n"
            "    try:\n        open(path, 'w').write('x')\n        results[path] = 'written'\n"
            "    except OSError as e:\n        results[path] = errno.errorcode[e.errno]\n"
            f"open('/tmp/{marker}', 'w').write('private')\n"
            "print(sorted(set(results.values())))"
        )
        r = sandbox.run(code)
        assert r.error is None and "written" not in r.stdout
        assert not (REPO / marker).exists() and not (tmp_path / marker).exists()
        assert not Path(f"/tmp/{marker}").exists()  # the sandbox's /tmp is private
        alive(sandbox)

    def test_nothing_beside_a_runtime_under_tmp_is_writable(self, workspace, mmat_home, tmp_path, monkeypatch):
        """A checkout (and so its venv) under /tmp: the runtime's binds land on the private /tmp, and
        the directories above them must be no more writable than the rest of the runtime's tree."""
        (tmp_path / "venv").mkdir()
        (tmp_path / "venv" / "lib.txt").write_text("runtime")
        top = f"/tmp/mmat-scaffold-{os.getpid()}-{time.time_ns()}"
        dst = f"{top}/checkout/.venv"
        binds, links = runtime.runtime_binds()
        monkeypatch.setattr(runtime, "runtime_binds", lambda: ((*binds, {"src": str(tmp_path / "venv"), "dst": dst, "kind": "dir"}), links))
        code = (
            "import errno, os\nresults = {}\n"
            f"print(open({dst + '/lib.txt'!r}).read())\n"
            f"for path in [{top + '/x'!r}, {top + '/checkout/x'!r}, {dst + '/x'!r}]:\n"
            "    try:\n        open(path, 'w').write('x')\n        results[path] = 'written'\n"
            "    except OSError as e:\n        results[path] = errno.errorcode[e.errno]\n"
            f"for attempt in (lambda: os.chmod({top!r}, 0o777), lambda: os.mkdir({top + '/checkout/d'!r}), lambda: os.rename({top + '/checkout'!r}, {top + '/moved'!r})):\n"
            "    try:\n        attempt()\n        results[len(results)] = 'done'\n"
            "    except OSError as e:\n        results[len(results)] = errno.errorcode[e.errno]\n"
            "open('/tmp/elsewhere', 'w').write('private')\n"
            "print(sorted(set(results.values())))"
        )
        with Sandbox(workspace, limits=FAST) as sb:
            r = sb.run(code)
            assert r.error is None, r.error
            assert r.stdout.splitlines() == ["runtime", "['EROFS']"], r.stdout
            alive(sb)
        assert sorted(os.listdir(tmp_path / "venv")) == ["lib.txt"] and not os.path.lexists(top)

    def test_symlink_escape_from_the_workspace(self, tool_sandbox, workspace, tmp_path):
        secret = tmp_path / "secret.txt"
        secret.write_text("host secret")
        code = (
            "import os\n"
            f"os.symlink({str(secret)!r}, 'link_to_secret')\nos.symlink('/etc/passwd', 'passwd')\n"
            "print(os.path.exists('link_to_secret'), os.path.exists('passwd'))\n"
            "try:\n    print(read_file('link_to_secret'))\nexcept ToolError as e:\n    print('tool:', e)\n"
        )
        r = tool_sandbox.run(code)
        assert "host secret" not in r.stdout
        assert r.stdout.startswith("False False\ntool: read_file: 'link_to_secret' is not a file")
        assert "[sandbox] removed link_to_secret" in r.stdout and "[sandbox] removed passwd" in r.stdout
        assert not os.path.lexists(view(workspace) / "link_to_secret") and not os.path.lexists(view(workspace) / "passwd")
        alive(tool_sandbox)

    def test_a_workspace_locked_with_chmod_does_not_lock_the_parent_out(self, workspace, mmat_home):
        """Rootless, the worker's files belong to the parent's own uid, which modes do stop: the
        workspace's root gets its mode back; a locked subdirectory only hides the sandbox's own files."""
        (workspace / "input.txt").write_text("in")
        with Sandbox(workspace, limits=Limits(wall_s=10)) as sb:
            r = sb.run("import os\nos.mkdir('d')\nopen('d/x', 'w').write('x')\nopen('y', 'w').write('y')\nos.chmod('d', 0)\nos.chmod('.', 0)")
            assert r.error is None and "y" in r.new_files
            alive(sb)
            sb.run("import os\nos.chmod('.', 0)")
        assert {"input.txt", "y"} <= set(os.listdir(workspace))

    def test_fifo_cannot_block_the_tool_host(self, tool_sandbox, workspace):
        t0 = time.monotonic()
        r = tool_sandbox.run("import os\nos.mkfifo('pipe.png')\ntry:\n    read_file('pipe.png')\nexcept ToolError as e:\n    print('tool:', e)")
        assert time.monotonic() - t0 < 10
        assert "is not a file" in r.stdout and not os.path.lexists(view(workspace) / "pipe.png")
        alive(tool_sandbox)

    # --- network ----------------------------------------------------------------------------------
    def test_connect_to_a_loopback_listener(self, sandbox):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        try:
            code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__, e.errno)"
            r = sandbox.run(code)
            assert r.stdout == "OSError 97\n"  # EAFNOSUPPORT from seccomp
            with pytest.raises(TimeoutError):
                listener.accept()
        finally:
            listener.close()
        alive(sandbox)

    def test_raw_syscall_sockets_are_refused(self, sandbox):
        code = (
            "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nout = []\n"
            "for family in (2, 10, 16, 17):  # AF_INET, AF_INET6, AF_NETLINK, AF_PACKET\n"
            "    fd = libc.socket(family, 1 if family in (2, 10) else 3, 0)\n"
            "    out.append((fd, errno.errorcode[ctypes.get_errno()]))\n"
            "print(out)"
        )
        r = sandbox.run(code)
        assert r.stdout == "[(-1, 'EAFNOSUPPORT'), (-1, 'EAFNOSUPPORT'), (-1, 'EAFNOSUPPORT'), (-1, 'EAFNOSUPPORT')]\n"
        alive(sandbox)

    def test_only_loopback_interface_is_visible(self, sandbox):
        code = (
            "import os\n"
            "print([l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]])\n"
            "print(os.path.exists('/sys/class/net'), [l for l in open('/proc/net/route').read().splitlines() if not l.startswith('Iface')])"
        )
        r = sandbox.run(code)
        assert r.stdout == "['lo']\nFalse []\n"  # no /sys, no routes
        alive(sandbox)

    def test_unix_socket_of_the_host_is_unreachable(self, sandbox, tmp_path):
        path = tmp_path / "host.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        server.settimeout(0.5)
        try:
            code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({str(path)!r})\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)"
            r = sandbox.run(code)
            assert r.stdout == "FileNotFoundError\n"
            with pytest.raises(TimeoutError):
                server.accept()
        finally:
            server.close()
        alive(sandbox)

    def test_dns_lookup_fails(self, sandbox):
        r = sandbox.run("import socket\nsocket.getaddrinfo('mmat-sandbox-test.invalid', 80)")
        assert r.error.type == "gaierror"
        alive(sandbox)

    # --- processes ---------------------------------------------------------------------------------
    def test_subprocess_and_os_system_are_contained(self, sandbox):
        code = (
            "import os, subprocess\n"
            "print(subprocess.run(['id', '-u'], capture_output=True, text=True).stdout.strip())\n"
            "print(subprocess.run(['cat', '/etc/passwd'], capture_output=True).returncode)\n"
            "print(os.system('ls /root/.ssh 2>/dev/null') != 0)\n"
            "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
        )
        r = sandbox.run(code)
        lines = r.stdout.splitlines()
        assert lines[0] == str(sandbox.uid) and lines[0] != "0"
        assert lines[1] == "1" and lines[2] == "True"
        pids = eval(lines[3])  # noqa: S307 - a list of ints printed by the test's own code
        assert 1 not in pids and 2 in pids and max(pids) < 100  # its own PID namespace; root's init is hidden
        alive(sandbox)

    def test_background_processes_die_with_the_step(self, sandbox):
        r = sandbox.run("import subprocess\np = subprocess.Popen(['sleep', '300'])\nprint(p.pid)")
        assert r.error is None
        time.sleep(0.2)
        assert sandbox_processes(sandbox) == [sandbox.worker_pid]
        alive(sandbox)

    def test_fork_bomb(self, workspace, mmat_home):
        with Sandbox(workspace, limits=Limits(wall_s=3, max_processes=16)) as sb:
            r = sb.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
            assert r.limit_hit == "wall_time" and r.restarted
            time.sleep(0.2)
            assert sandbox_processes(sb) == [sb.worker_pid]  # the whole tree died; only the new worker runs
            r = sb.run("import os\ntry:\n    [os.fork() or os._exit(0) for _ in range(10)]\n    print('forked')\nexcept OSError as e:\n    print(e.errno)")
            assert r.stdout == "forked\n"
            alive(sb)

    def test_fork_bomb_stops_at_the_process_limit(self, workspace, mmat_home):
        with Sandbox(workspace, limits=Limits(wall_s=10, max_processes=8)) as sb:
            code = "import os, time\nkids = []\ntry:\n    for _ in range(50):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(30)\n        kids.append(pid)\nexcept BlockingIOError as e:\n    print('stopped after', len(kids))"
            r = sb.run(code)
            assert r.stdout.startswith("stopped after") and int(r.stdout.split()[-1]) < 8
            alive(sb)

    def test_memory_bomb(self, workspace, mmat_home):
        with Sandbox(workspace, limits=Limits(wall_s=10, memory_mb=512)) as sb:
            sb.run("x = 1")
            r = sb.run("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))")
            assert r.limit_hit == "memory" and r.error.type == "MemoryError" and r.restarted
            assert "512 MiB" in r.error.message
            assert sb.run("print(x)").error.type == "NameError"
            alive(sb)

    def test_disk_fill_stops_at_the_file_size_limit(self, workspace, mmat_home):
        with Sandbox(workspace, limits=Limits(wall_s=10, file_size_mb=1)) as sb:
            r = sb.run("with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 65536)")
            assert r.limit_hit == "file_size" and r.restarted
            assert "File too large" in r.error.message and "1 MiB" in r.error.message
            assert (view(workspace) / "big.bin").stat().st_size <= 1024 * 1024
            alive(sb)

    def test_disk_fill_stops_at_the_workspace_quota(self, workspace, mmat_home):
        with Sandbox(workspace, limits=Limits(wall_s=10, file_size_mb=1, workspace_mb=2)) as sb:
            sb.run("open('keep.txt', 'w').write('kept')")
            r = sb.run("for i in range(4):\n    open(f'part{i}.bin', 'wb').write(b'0' * 1_000_000)")
            assert r.limit_hit == "workspace" and r.restarted
            assert "over its 2 MiB limit" in r.error.message
            assert sorted(os.listdir(view(workspace))) == ["keep.txt"]
            alive(sb)

    def test_private_tmp_is_bounded(self, sandbox):
        r = sandbox.run("with open('/tmp/fill', 'wb') as f:\n    for _ in range(200):\n        f.write(b'0' * 1_000_000)")
        assert r.error is not None and r.error.type == "OSError"  # ENOSPC at 64 MiB (or EFBIG at the file limit)
        alive(sandbox)

    def test_infinite_loop_hits_the_wall_clock(self, sandbox):
        t0 = time.monotonic()
        r = sandbox.run("while True:\n    pass")
        assert r.limit_hit == "wall_time" and r.error.type == "TimeoutError" and r.restarted
        assert time.monotonic() - t0 < 10
        alive(sandbox)

    def test_cpu_spin_with_signals_ignored(self, workspace, mmat_home):
        code = (
            "import signal\n"
            "for s in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP, signal.SIGUSR1):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "while True:\n    pass"
        )
        with Sandbox(workspace, limits=Limits(wall_s=3, cpu_s=1)) as sb:
            t0 = time.monotonic()
            r = sb.run(code)
            assert r.limit_hit == "wall_time" and r.restarted  # SIGXCPU ignored: the wall clock's SIGKILL ends it
            assert time.monotonic() - t0 < 10
            alive(sb)

    # --- secrets and identity --------------------------------------------------------------------
    def test_parent_environment_is_invisible(self, workspace, mmat_home, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        with Sandbox(workspace, limits=Limits(wall_s=5)) as sb:
            code = (
                "import os, glob\nprint('OPENAI_API_KEY' in os.environ, sorted(os.environ)[:3])\n"
                "leaks = []\nfor p in glob.glob('/proc/*/environ'):\n    try:\n"
                "        if b'sk-test-not-real' in open(p, 'rb').read():\n            leaks.append(p)\n"
                "    except OSError:\n        pass\nprint(leaks, os.environ['HOME'])"
            )
            r = sb.run(code)
            assert r.stdout == "False ['HOME', 'LANG', 'LC_ALL']\n[] /workspace\n"
            alive(sb)

    def test_proc_1_environ(self, sandbox):
        r = sandbox.run("print(open('/proc/1/environ', 'rb').read())")
        assert r.error.type in ("FileNotFoundError", "PermissionError")
        alive(sandbox)

    def test_importing_mmat_to_reach_secrets(self, sandbox):
        r = sandbox.run("import mmat")
        assert r.error.type == "ModuleNotFoundError"
        r = sandbox.run("import sys\nprint([p for p in sys.path if 'work/main' in p and 'site-packages' not in p])")
        assert r.stdout == "[]\n"
        alive(sandbox)

    def test_setuid_to_root(self, sandbox):
        r = sandbox.run("import os\nos.setuid(0)")
        # rootless: uid 0 does not exist in the sandbox's user namespace (EINVAL), root mode: EPERM
        assert r.error.type == ("OSError" if ROOTLESS else "PermissionError")
        assert sandbox.run("import os\nprint(os.getuid(), os.geteuid())").stdout == f"{sandbox.uid} {sandbox.uid}\n"
        r = sandbox.run("import subprocess\nprint(subprocess.run(['su', '-c', 'id'], capture_output=True).returncode != 0)")
        assert r.stdout == "True\n"
        alive(sandbox)

    def test_no_capability_survives_the_fork_of_the_worker(self, sandbox):
        """The worker is forked from its (privileged) launcher, not exec'd: every capability set must
        still be empty, in both modes, in the worker and in what it starts."""
        code = (
            "import subprocess\n"
            "caps = [l for l in open('/proc/self/status') if l.startswith('Cap')]\n"
            "print(''.join(caps), end='')\n"
            "print(subprocess.run(['grep', '^Cap', '/proc/self/status'], capture_output=True, text=True).stdout, end='')"
        )
        lines = sandbox.run(code).stdout.splitlines()
        assert len(lines) == 10, lines
        assert all(line.split()[1] == "0000000000000000" for line in lines), lines
        r = sandbox.run("import os\nos.setgid(0)")
        assert r.error is not None and r.error.type in ("PermissionError", "OSError")
        alive(sandbox)

    def test_no_host_path_in_the_command_lines(self, sandbox):
        r = sandbox.run(
            "import glob\nfor p in sorted(glob.glob('/proc/[0-9]*/cmdline')):\n"
            "    try:\n        print(open(p, 'rb').read())\n    except OSError:\n        pass"
        )
        assert r.stdout and "mmat/sandbox" not in r.stdout and "_launcher" not in r.stdout, r.stdout
        alive(sandbox)

    # --- kernel interfaces -------------------------------------------------------------------------
    def test_ctypes_calls(self, sandbox):
        code = (
            "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.unshare(0x10000000), errno.errorcode[ctypes.get_errno()])\n"  # CLONE_NEWUSER
            "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), errno.errorcode[ctypes.get_errno()])"
        )
        r = sandbox.run(code)
        assert r.stdout == "-1 EPERM\n-1 EPERM\n"
        r = sandbox.run("import ctypes\nctypes.string_at(0)")  # segfault
        assert r.error.type == "SandboxCrash" and "SIGSEGV" in r.error.message and r.restarted
        alive(sandbox)

    def test_mount_unshare_chroot_escapes(self, sandbox):
        code = (
            "import os, subprocess\nout = []\n"
            "try:\n    os.chroot('/tmp')\nexcept OSError as e:\n    out.append(type(e).__name__)\n"
            "out.append(subprocess.run(['unshare', '-r', '--mount', 'true'], capture_output=True).returncode)\n"
            "out.append(subprocess.run(['mount', '-t', 'tmpfs', 'x', '/tmp'], capture_output=True).returncode)\n"
            "print(out)"
        )
        r = sandbox.run(code)
        out = eval(r.stdout)  # noqa: S307 - printed by the test's own code
        assert out[0] == "PermissionError" and out[1] != 0 and out[2] != 0
        alive(sandbox)

    def test_ptrace(self, sandbox):
        code = (
            "import ctypes, errno, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "child = subprocess.Popen(['sleep', '5'])\n"
            "print(libc.ptrace(16, child.pid, None, None), errno.errorcode[ctypes.get_errno()])\n"  # PTRACE_ATTACH
            "print(libc.ptrace(0, 0, None, None), errno.errorcode[ctypes.get_errno()])"  # PTRACE_TRACEME
        )
        r = sandbox.run(code)
        assert r.stdout == "-1 EPERM\n-1 EPERM\n"
        alive(sandbox)

    def test_resource_limits_cannot_be_raised(self, sandbox):
        code = (
            "import resource\nout = []\n"
            "for name in ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_FSIZE', 'RLIMIT_CPU'):\n"
            "    res = getattr(resource, name)\n"
            "    try:\n        resource.setrlimit(res, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n        out.append('raised')\n"
            "    except (ValueError, OSError):\n        out.append('refused')\n"
            "print(out)"
        )
        r = sandbox.run(code)
        assert r.stdout == "['refused', 'refused', 'refused', 'refused']\n"
        alive(sandbox)

    # --- signals --------------------------------------------------------------------------------------
    def test_signal_tricks(self, sandbox):
        parent = os.getpid()
        code = (
            "import os, signal\nout = []\n"
            f"for pid, sig in (({parent}, signal.SIGTERM), ({parent}, signal.SIGKILL), (1, signal.SIGKILL), (1, signal.SIGTERM)):\n"
            "    try:\n        os.kill(pid, sig)\n        out.append('sent')\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\n"
            "import subprocess\nchild = subprocess.Popen(['sleep', '30'])\n"
            "os.kill(-1, signal.SIGKILL)  # every process it may signal in its namespace, except itself\n"
            "print(out, child.wait(), os.getppid())"
        )
        r = sandbox.run(code)
        assert r.error is None
        assert r.stdout.startswith("[") and "sent" not in r.stdout.split("]")[0]
        assert r.stdout.split("] ")[1] == "-9 0\n"  # its child died; its parent is outside its PID namespace
        assert os.getpid() == parent  # we are still here
        alive(sandbox)

    def test_killing_its_own_process_group(self, sandbox):
        r = sandbox.run("import os, signal\nos.killpg(0, signal.SIGKILL)")
        assert r.error.type == "SandboxCrash" and r.restarted and "SIGKILL" in r.error.message
        alive(sandbox)

    # --- the control channel ----------------------------------------------------------------------------
    def test_junk_on_the_channel(self, sandbox):
        sandbox.run("x = 1")
        r = sandbox.run("import os\nos.write(4, b'this is not json\\n')")
        assert r.error.type == "SandboxProtocolError" and r.restarted
        assert sandbox.run("print(x)").error.type == "NameError"
        alive(sandbox)

    def test_forged_and_partial_messages(self, sandbox):
        r = sandbox.run("import os\nos.write(4, b'{\"op\": \"done\", \"step\": 0, \"stdout\": \"forged\"}\\n')")
        assert r.error.type == "SandboxProtocolError" and r.restarted
        r = sandbox.run("import os\nos.write(4, b'{\"op\": \"tool\", \"name\": \"x\"')\nos._exit(0)")
        assert r.error.type == "SandboxProtocolError" and r.restarted
        alive(sandbox)

    def test_closing_the_channel(self, sandbox):
        r = sandbox.run("import os\nos.close(3)\nos.close(4)")
        assert r.error.type == "SandboxCrash" and r.restarted
        sandbox.run("kept = 1\nimport os\nos.close(3)")  # the worker cannot read its next request and exits
        r = sandbox.run("print(6 * 7)")
        assert r.error is None and r.stdout.startswith("42\n[sandbox] The Python process had exited")
        assert sandbox.run("print(kept)").error.type == "NameError"
        alive(sandbox)

    def test_huge_stdout(self, sandbox):
        r = sandbox.run("import os\nprint('x' * 5_000_000)\nos.write(1, b'y' * 5_000_000)")
        assert r.error is None
        assert len(r.stdout) < 50_000
        assert "more characters of output not shown" in r.stdout and "more bytes not shown" in r.stdout
        alive(sandbox)

    def test_sys_exit_and_os_exit(self, sandbox):
        sandbox.run("kept = 'yes'")
        r = sandbox.run("import sys\nsys.exit(3)")
        assert r.error.type == "SystemExit" and not r.restarted
        assert sandbox.run("print(kept)").stdout == "yes\n"
        r = sandbox.run("import os\nos._exit(7)")
        assert r.error.type == "SandboxCrash" and "code 7" in r.error.message and r.restarted
        alive(sandbox)

    def test_too_many_tool_calls(self, workspace, mmat_home):
        tools = FakeTools(workspace)
        with Sandbox(workspace, tools=tools, limits=Limits(wall_s=10, max_tool_calls=5)) as sb:
            r = sb.run("while True:\n    shout('again')")
            assert r.limit_hit == "tool_calls" and r.restarted and len(r.tool_calls) == 5
            alive(sb)

    # --- neighbours ---------------------------------------------------------------------------------
    def test_another_sandbox_is_out_of_reach(self, sandbox, tmp_path, mmat_home):
        other_ws = tmp_path / "other"
        other_ws.mkdir()
        with Sandbox(other_ws, limits=Limits(wall_s=5)) as other:
            other.run("open('private.txt', 'w').write('neighbour')\nimport time\nsecret = 'in memory'")
            code = (
                "import os, signal\nout = [os.path.exists(p) for p in "
                f"({str(other_ws / 'private.txt')!r}, '/workspace/private.txt')]\n"
                f"try:\n    os.kill({other.worker_pid}, signal.SIGKILL)\n    out.append('sent')\n"
                "except OSError as e:\n    out.append(type(e).__name__)\nprint(out)"
            )
            r = sandbox.run(code)
            assert r.stdout == "[False, False, 'ProcessLookupError']\n"
            assert other.run("print(secret)").stdout == "in memory\n"
            assert sandbox.uid != other.uid
        alive(sandbox)
