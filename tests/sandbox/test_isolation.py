"""Between steps the sandbox is stopped; its memory and tasks are counted together (cgroups where
writable); the mode is chosen automatically. These run in both modes (see test_both_modes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mmat
from mmat.errors import SandboxError
from mmat.sandbox import Limits, Sandbox
from mmat.sandbox import cgroups, modes

from .helpers import ROOTLESS, alive, needs_sandbox, view

pytestmark = needs_sandbox
REPO = Path(mmat.__file__).resolve().parents[1]

# A background thread that keeps changing the workspace: a counter file, new files, and a forked
# process that writes too (started after the step's own cleanup of leftover processes).
_BUSY = (
    "import os, threading, time\n"
    "n = [0]\n"
    "ticks = []\n"
    "def busy():\n"
    "    while True:\n"
    "        n[0] += 1\n"
    "        ticks.append(time.monotonic())\n"
    "        del ticks[:-2000]\n"
    "        with open('tick', 'w') as f:\n"
    "            f.write(str(n[0]))\n"
    "        open(f'new-{n[0] % 50}', 'w').close()\n"
    "        time.sleep(0.001)\n"
    "def late_child():\n"
    "    time.sleep(0.05)\n"
    "    if os.fork() == 0:\n"
    "        while True:\n"
    "            open('child-tick', 'a').write('x')\n"
    "            time.sleep(0.001)\n"
    "threading.Thread(target=busy, daemon=True).start()\n"
    "threading.Thread(target=late_child, daemon=True).start()\n"
    "time.sleep(0.02)\n"
)


def _listing(ws: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in ws.iterdir()}


def _assert_frozen_between_steps(sb: Sandbox, ws: Path, tries: int) -> None:
    r = sb.run(_BUSY)
    assert r.error is None, r.error
    gaps = []
    for _ in range(tries):
        before = _listing(ws)
        t_after = time.monotonic()  # CLOCK_MONOTONIC is the same clock inside the sandbox
        time.sleep(0.03)
        assert _listing(ws) == before  # nothing of the sandbox runs between steps
        t_before = time.monotonic()
        gaps.append((t_after, t_before))
        r = sb.run("time.sleep(0.01)\nprint(n[0])")
        assert r.error is None and int(r.stdout) > 0  # ...and its state (the thread, n) survives
    # the thread ticked during the steps, never in a gap between them
    r = sb.run(f"gaps = {gaps!r}\nprint(len(ticks) > 0, sum(1 for t in ticks for a, b in gaps if a < t < b))")
    assert r.stdout == "True 0\n"


def test_background_threads_and_processes_are_frozen_between_steps(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=10)) as sb:
        _assert_frozen_between_steps(sb, workspace, tries=20)
        alive(sb)


def test_sigstop_freezing_without_a_cgroup_freezer(workspace, mmat_home, monkeypatch):
    """The fallback (init stops its whole PID namespace) holds the same property."""
    monkeypatch.setattr(cgroups.SandboxCgroup, "create", classmethod(lambda cls, **kw: cls()))
    with Sandbox(workspace, limits=Limits(wall_s=10)) as sb:
        assert sb._holder[0].cgroup.launcher_spec()["freezer"] == {"kind": "signal"}
        _assert_frozen_between_steps(sb, workspace, tries=20)
        alive(sb)


def test_cgroup_v1_freezer(workspace, mmat_home, monkeypatch):
    """Where only v1 hierarchies exist (or v2 is not writable): v1 freezer, and a frozen sandbox still
    dies cleanly (v1 frozen tasks ignore SIGKILL until thawed)."""
    monkeypatch.setattr(cgroups, "hierarchies", lambda real=cgroups.hierarchies: [h for h in real() if h.version == 1])
    with Sandbox(workspace, limits=Limits(wall_s=10)) as sb:
        cg = sb._holder[0].cgroup
        if cg.freeze_kind != "cgroup1":
            pytest.skip(f"no writable v1 freezer here: {cg.unavailable.get('freeze')}")
        _assert_frozen_between_steps(sb, workspace, tries=5)
        sb.run("import subprocess\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(0.05)")
        dirs, pid = list(cg.dirs), sb.worker_pid
    assert not os.path.exists(f"/proc/{pid}") and not any(os.path.exists(d) for d in dirs)


def test_the_sandbox_cannot_continue_itself_or_signal_init(sandbox):
    code = (
        "import os, signal\nout = []\n"
        "for args in ((os.getpid(), signal.SIGCONT), (0, signal.SIGCONT), (-1, signal.SIGCONT), (1, signal.SIGTERM), (1, 0)):\n"
        "    try:\n        os.kill(*args)\n        out.append('sent')\n"
        "    except OSError as e:\n        out.append(type(e).__name__)\n"
        "try:\n    os.pidfd_open(1)\n    out.append('opened')\nexcept OSError as e:\n    out.append(type(e).__name__)\n"
        "print(out)"
    )
    r = sandbox.run(code)
    assert r.stdout == "['PermissionError', 'PermissionError', 'PermissionError', 'PermissionError', 'PermissionError', 'PermissionError']\n"
    alive(sandbox)


def _cgroup_or_skip(sb: Sandbox, function: str) -> cgroups.SandboxCgroup:
    cg = sb._holder[0].cgroup
    if getattr(cg, f"{function}_dir") is None:
        pytest.skip(f"no writable cgroup for {function} here: {cg.unavailable.get(function)}")
    return cg


def test_memory_counts_every_process_of_the_sandbox(workspace, mmat_home):
    """Four processes each under the per-process limit, together over the sandbox's."""
    code = (
        "import os, time\npids = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        b = bytearray(150 * 1024 * 1024)\n"
        "        for i in range(0, len(b), 4096):\n            b[i] = 1\n"
        "        time.sleep(5)\n        os._exit(0)\n"
        "    pids.append(pid)\n"
        "print([os.waitpid(p, 0)[1] for p in pids])"
    )
    with Sandbox(workspace, limits=Limits(wall_s=20, memory_mb=256)) as sb:
        _cgroup_or_skip(sb, "memory")
        r = sb.run(code)
        assert r.limit_hit == "memory" and r.error.type == "MemoryError" and r.restarted
        assert "256 MiB" in r.error.message
        alive(sb)


def test_tasks_are_counted_per_sandbox(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=10, max_processes=12)) as sb:
        cg = _cgroup_or_skip(sb, "pids")
        assert Path(cg.pids_dir, "pids.max").read_text().strip() == "12"
        sb.run("import threading, time\nev = threading.Event()\nts = [threading.Thread(target=ev.wait) for _ in range(5)]\n[t.start() for t in ts]")
        assert int(Path(cg.pids_dir, "pids.current").read_text()) >= 6
        r = sb.run("more = [threading.Thread(target=ev.wait) for _ in range(20)]\ntry:\n    [t.start() for t in more]\nexcept RuntimeError as e:\n    print('refused:', e)")
        assert r.stdout.startswith("refused: can't start new thread")
        sb.run("ev.set()")
        alive(sb)


def test_cgroups_are_removed_with_the_sandbox(workspace, mmat_home):
    sb = Sandbox(workspace, limits=Limits(wall_s=5))
    dirs = list(sb._holder[0].cgroup.dirs)
    sb.run("import os\nos._exit(3)")  # a restart: the old worker's cgroups go, the new one's come
    assert not any(os.path.exists(d) for d in dirs)
    dirs = list(sb._holder[0].cgroup.dirs)
    sb.close()
    assert not any(os.path.exists(d) for d in dirs)


def test_mode_is_chosen_automatically(sandbox):
    assert sandbox.mode.name == ("rootless" if ROOTLESS else "root")
    assert sandbox.events[0]["mode"] == sandbox.mode.name
    r = sandbox.run("import os\nprint(os.getuid() != 0, open('/proc/self/uid_map').read().split())")
    uid_map = eval(r.stdout.split(" ", 1)[1])  # noqa: S307 - printed by the test's own code
    if ROOTLESS:
        assert uid_map == [str(sandbox.uid), str(os.getuid()), "1"]  # only the caller exists inside
    else:
        assert uid_map == ["0", "0", "4294967295"]


def test_neither_mode_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(modes.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(modes, "probe_rootless", lambda: (False, "unshare(CLONE_NEWUSER): Operation not permitted"))
    with pytest.raises(SandboxError) as err:
        modes.sandbox_mode()
    text = str(err.value)
    assert "not root (uid 1000)" in text and "Operation not permitted" in text
    assert "kernel.unprivileged_userns_clone=1" in text and "container" in text


def test_doctor_names_the_mode_and_proves_it(mmat_home):
    from click.testing import CliRunner

    from mmat.cli import cli

    out = CliRunner().invoke(cli, ["doctor", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["check"]: r for r in json.loads(out.output)}
    assert rows["sandbox mode"]["status"] == ("rootless" if ROOTLESS else "root")
    assert rows["a real sandbox"]["status"] == "ok" and "ran print(6 * 7)" in rows["a real sandbox"]["detail"]
    assert rows["freeze between steps"]["status"] == "ok"


def test_doctor_without_any_mode_says_what_to_do(mmat_home, monkeypatch):
    from click.testing import CliRunner

    from mmat.cli import cli

    monkeypatch.setattr(modes.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(modes, "probe_rootless", lambda: (False, "user.max_user_namespaces is 0"))
    out = CliRunner().invoke(cli, ["doctor", "--json"])
    assert out.exit_code == 1
    rows = json.loads(out.output)
    assert rows[0]["status"] == "no" and "user.max_user_namespaces is 0" in rows[0]["detail"] and "container" in rows[0]["detail"]


_FILL = (
    "written = 0\n"
    "try:\n"
    "    for i in range({n}):\n"
    "        open(f'f{{i}}', 'wb').write(b'0' * {size})\n"
    "        written += 1\n"
    "except OSError as e:\n"
    "    print('stopped', e.errno, written)\n"
    "    raise\n"
)


def test_workspace_quota_holds_during_the_step(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=20, file_size_mb=1, workspace_mb=4)) as sb:
        sb.run("open('keep.txt', 'w').write('kept')")
        r = sb.run(_FILL.format(n=40, size=500_000))
        assert r.limit_hit == "workspace" and r.restarted and "over its 4 MiB limit" in r.error.message
        words = r.stdout.split()  # a tmpfs of 4 MiB (both modes): the ninth file cannot be written at all
        assert words[:2] == ["stopped", "28"] and int(words[2]) * 500_000 <= 4 * 1024 * 1024
        assert sorted(os.listdir(view(workspace))) == ["keep.txt"]  # what the step created is gone
        alive(sb)


def test_workspace_counts_files_and_directories(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=20, workspace_inodes=200)) as sb:
        r = sb.run(_FILL.format(n=1000, size=0))
        assert r.limit_hit == "workspace" and r.restarted
        assert "files and directories, over its limit of 200" in r.error.message
        words = r.stdout.split()
        assert words[:2] == ["stopped", "28"] and int(words[2]) <= 200
        assert os.listdir(view(workspace)) == []
        alive(sb)


def test_workspace_files_reach_the_disk_on_close(workspace, mmat_home):
    (workspace / "input.txt").write_text("in")
    with Sandbox(workspace, limits=Limits(wall_s=10)) as sb:
        assert os.path.ismount(workspace) == (not ROOTLESS)  # root mode: the quota tmpfs is over it
        r = sb.run("import os\nopen('out.txt', 'w').write('out')\nos.remove('input.txt')\nos.mkdir('d')\nopen('d/x', 'w').write('x')")
        assert r.error is None
    assert not os.path.ismount(workspace)
    assert sorted(os.listdir(workspace)) == ["d", "out.txt"]
    assert (workspace / "out.txt").read_text() == "out" and (workspace / "d" / "x").read_text() == "x"
    assert {p.stat().st_uid for p in workspace.rglob("*")} == {os.geteuid()}


def test_files_put_in_by_path_while_a_sandbox_runs_are_kept(workspace, mmat_home):
    """Root mode: the path is the tmpfs, so the sandbox sees the file; rootless: it lands in the
    directory, which the sandbox does not see, and stays there after close next to the sandbox's files."""
    with Sandbox(workspace, limits=Limits(wall_s=10)) as sb:
        sb.run("open('out.txt', 'w').write('out')")
        (workspace / "by_path.txt").write_text("put in")
        seen = sb.run("import os\nprint(os.path.exists('by_path.txt'))").stdout
        assert seen == ("False\n" if ROOTLESS else "True\n")
    assert sorted(os.listdir(workspace)) == ["by_path.txt", "out.txt"] and (workspace / "by_path.txt").read_text() == "put in"


def test_inputs_larger_than_the_quota_are_a_clear_error(workspace, mmat_home, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"0" * (3 * 1024 * 1024))
    with pytest.raises(SandboxError, match="do not fit its quota of 2 MiB"):
        Sandbox(workspace, limits=Limits(workspace_mb=2), inputs=[big])
    assert not os.path.ismount(workspace) and (workspace / "big.bin").exists()


class _StillTools:
    """One tool that looks at the workspace twice, 30 ms apart, and says whether anything moved."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def names(self) -> list[str]:
        return ["still"]

    def signature(self, name: str) -> list[str]:
        return []

    def call(self, name: str, kwargs: dict) -> str:
        before = _listing(self.workspace)
        time.sleep(0.03)
        return str(_listing(self.workspace) == before)


def test_the_sandbox_is_frozen_while_a_tool_runs(workspace, mmat_home):
    with Sandbox(workspace, tools=_StillTools(workspace), limits=Limits(wall_s=20)) as sb:
        r = sb.run(_BUSY + "time.sleep(0.1)\nseen = [still() for _ in range(20)]\nprint(seen.count('True'), n[0] > 0)")
        assert r.error is None and r.stdout == "20 True\n"
        alive(sb)


def test_quota_mounts_are_taken_down_when_mmat_is_killed(tmp_path):
    """A parent killed with SIGKILL leaves no mount behind: the keeper restores the files to disk."""
    if ROOTLESS:
        pytest.skip("rootless mode mounts nothing on the host")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "input.txt").write_text("in")
    code = (
        "import os, signal, sys\nfrom mmat.sandbox import Sandbox, Limits\n"
        f"sb = Sandbox({str(ws)!r}, limits=Limits(wall_s=10))\n"
        "assert sb.run(\"open('made.txt', 'w').write('made')\").error is None\n"
        "print(os.path.ismount(sb.workspace), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == -9 and run.stdout == "True\n", run.stderr
    deadline = time.monotonic() + 20
    while os.path.ismount(ws) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.ismount(ws)
    assert sorted(os.listdir(ws)) == ["input.txt", "made.txt"] and (ws / "made.txt").read_text() == "made"
