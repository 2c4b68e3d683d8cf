"""The warm sandbox pool: a worker per trajectory, never shared, replaced in the background, no leaks.

Runs in both modes (test_both_modes.py runs this directory again as an unprivileged user).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import mmat
from mmat.config import Settings
from mmat.errors import ConfigError
from mmat.sandbox import Limits, SandboxPool
from mmat.sandbox.pool import close_shared_pools, shared_pool

from .helpers import FAST, FakeTools, needs_sandbox, view

pytestmark = needs_sandbox
REPO = Path(mmat.__file__).resolve().parents[1]

# Trajectory A leaves traces everywhere a sandbox can write or keep state.
PLANT = (
    "import os, subprocess\n"
    "secret = 'canary-A'\n"
    "os.environ['CANARY'] = 'A'\n"
    "for d in ('/tmp', '/dev/shm', '/workspace'):\n"
    "    open(os.path.join(d, 'canary'), 'w').write('A')\n"
    "import json\n"
    "json.CANARY = 'A'\n"
    "print(os.getuid())"
)
LOOK = (
    "import os, json, sys\n"
    "seen = [d for d in ('/tmp', '/dev/shm', '/workspace') if os.path.exists(os.path.join(d, 'canary'))]\n"
    "print(seen, 'secret' in globals(), os.environ.get('CANARY'), getattr(json, 'CANARY', None), os.getuid())"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # rootless: a pid reused by someone else's process
        return True
    try:  # a zombie (not reaped yet) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _warm_state(pool: SandboxPool) -> list[tuple[list[int], list[str], str | None]]:
    """(pids, cgroup dirs, staging) of every warm worker waiting in the pool."""
    with pool._cond:
        ready = list(pool._ready)
    out = []
    for warm in ready:
        w = warm.worker
        out.append(([w.worker_pid, w.init_pid], list(w.cgroup.dirs) if w.cgroup else [], str(warm.quota.staging) if warm.quota else None))
    return out


@pytest.fixture
def pool(tmp_path, mmat_home):
    with SandboxPool(1, limits=FAST) as p:
        assert p.wait_ready(timeout_s=30), p.last_error
        yield p


def _workspace(tmp_path: Path, name: str) -> Path:
    ws = tmp_path / name
    ws.mkdir()
    (ws / "task.txt").write_text(f"files of {name}")
    return ws


def test_a_warm_sandbox_sees_its_workspace_and_runs(pool, tmp_path):
    ws = _workspace(tmp_path, "t1")
    with pool.acquire(ws, tools=FakeTools(ws)) as sb:
        assert sb.events[0].get("pooled") is True
        r = sb.run("print(open('task.txt').read(), add(40, 2))\nopen('out.txt', 'w').write('made inside')")
        assert r.error is None, r.error
        assert r.stdout == "files of t1 42\n"
        assert r.new_files == ["out.txt"]
        assert (view(ws) / "out.txt").read_text() == "made inside"  # the parent sees it (rootless: through the tmpfs's fd)
        assert sb.run("print(6 * 7)").stdout == "42\n"
    assert sorted(p.name for p in ws.iterdir()) == ["out.txt", "task.txt"]  # files stay after close
    assert pool.stats["warm"] == 1 and pool.stats["cold"] == 0


@pytest.mark.parametrize("attempt", range(3))
def test_no_trajectory_sees_anything_of_the_previous_one(pool, tmp_path, attempt):
    ws_a, ws_b = _workspace(tmp_path, "a"), _workspace(tmp_path, "b")
    with pool.acquire(ws_a) as a:
        uid_a = int(a.run(PLANT).stdout)
        pid_a = a.worker_pid
    assert pool.wait_ready(timeout_s=30), pool.last_error
    with pool.acquire(ws_b) as b:
        assert b.events[0].get("pooled") is True
        assert b.worker_pid != pid_a
        out = b.run(LOOK).stdout.split()
    assert out[:4] == ["[]", "False", "None", "None"], out
    assert int(out[4]) != uid_a or os.geteuid() != 0  # root mode: every sandbox has its own host uid
    assert not (ws_b / "canary").exists() and (ws_a / "canary").read_text() == "A"


def test_a_used_worker_is_destroyed_and_replaced(pool, tmp_path):
    before = _warm_state(pool)
    assert len(before) == 1
    started = pool.stats["started"]
    ws = _workspace(tmp_path, "t")
    with pool.acquire(ws) as sb:
        pids = [sb._holder[0].worker_pid, sb._holder[0].init_pid]
        assert pids == before[0][0]  # it is the warm one
        assert pool.ready() == 0 or pool.stats["started"] > started
    assert _wait_gone(pids) == []  # closed: its processes are gone, never handed out again
    assert pool.wait_ready(timeout_s=30), pool.last_error
    assert pool.stats["started"] == started + 1
    after = _warm_state(pool)
    assert after[0][0] != pids


def test_close_leaves_no_process_cgroup_mount_or_directory(tmp_path, mmat_home):
    pool = SandboxPool(2, limits=FAST)
    assert pool.wait_ready(timeout_s=30), pool.last_error
    state = _warm_state(pool)
    assert len(state) == 2
    pool.close()
    assert _wait_gone([p for pids, _, _ in state for p in pids]) == []
    for _, dirs, staging in state:
        assert not any(os.path.exists(d) for d in dirs)
        if staging is not None:
            assert staging not in _mounts() and not os.path.exists(staging)
    with pytest.raises(Exception, match="closed"):
        pool.acquire(tmp_path / "late")


@pytest.mark.parametrize("attempt", range(2))
def test_many_threads_at_once_each_get_their_own_sandbox(tmp_path, mmat_home, attempt):
    n = 6
    results: dict[int, tuple[str, int | None]] = {}
    errors: list[BaseException] = []
    with SandboxPool(2, limits=FAST) as pool:
        assert pool.wait_ready(timeout_s=30), pool.last_error
        barrier = threading.Barrier(n)

        def trajectory(i: int) -> None:
            try:
                ws = _workspace(tmp_path, f"c{i}")
                barrier.wait()
                with pool.acquire(ws) as sb:
                    sb.run(f"mine = {i}\nopen('/tmp/who', 'w').write(str({i}))")
                    time.sleep(0.05)
                    results[i] = (sb.run("print(mine, open('/tmp/who').read(), open('task.txt').read())").stdout, sb.uid)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=trajectory, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert {i: out for i, (out, _) in results.items()} == {i: f"{i} {i} files of c{i}\n" for i in range(n)}
        assert len({uid for _, uid in results.values()}) == n
        assert pool.stats["warm"] + pool.stats["cold"] == n and pool.stats["warm"] >= 1


def test_other_limits_start_cold_and_a_bad_tool_host_keeps_the_worker(pool, tmp_path):
    ws = _workspace(tmp_path, "other")
    with pool.acquire(ws, limits=Limits(wall_s=2.0)) as sb:
        assert "pooled" not in sb.events[0] and sb.limits.wall_s == 2.0
        assert sb.run("print(1)").stdout == "1\n"
    assert pool.stats["cold"] == 1
    with pytest.raises(ConfigError, match="tool host"):
        pool.acquire(_workspace(tmp_path, "bad"), tools=object())  # type: ignore[arg-type]
    assert pool.ready() == 1  # the untouched warm worker went back


def test_a_warm_worker_that_died_is_not_handed_out(pool, tmp_path):
    (pids, _, _), = _warm_state(pool)
    os.kill(pids[0], signal.SIGKILL)
    assert _wait_gone([pids[0]]) == []
    time.sleep(0.2)  # its launcher notices and reports
    ws = _workspace(tmp_path, "after")
    with pool.acquire(ws) as sb:
        assert sb.worker_pid != pids[0]
        assert sb.run("print(open('task.txt').read())").stdout == "files of after\n"


@pytest.mark.parametrize("how", ["exit", "ctrl_c"])
def test_interpreter_exit_and_ctrl_c_take_the_warm_workers_down(tmp_path, how):
    code = (
        "import os, signal, sys, time\n"
        "from mmat.sandbox import SandboxPool, Limits\n"
        f"pool = SandboxPool(2, limits=Limits(wall_s=3.0))\n"
        "assert pool.wait_ready(timeout_s=30), pool.last_error\n"
        "for warm in list(pool._ready):\n"
        "    print(warm.worker.worker_pid, warm.worker.init_pid, warm.quota.staging if warm.quota else '-', flush=True)\n"
        "print('ready', flush=True)\n"
        + ("time.sleep(60)\n" if how == "ctrl_c" else "")
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        if line.strip() == "ready":
            break
        lines.append(line.split())
    assert len(lines) == 2, proc.stderr.read() if proc.stderr else ""
    if how == "ctrl_c":
        proc.send_signal(signal.SIGINT)
    proc.wait(60)
    pids = [int(x) for parts in lines for x in parts[:2]]
    assert _wait_gone(pids) == []
    for parts in lines:
        if parts[2] != "-":
            assert parts[2] not in _mounts()


def test_codeagent_takes_its_sandbox_from_the_shared_pool(tmp_path, mmat_home):
    from mmat.programs.agent import CodeAgent

    settings = Settings(home=mmat_home, sandbox_pool=1)
    agent = CodeAgent([], settings=settings, limits=FAST)
    try:
        pool = shared_pool(settings, FAST)
        assert pool is not None and pool is shared_pool(settings, FAST)
        assert pool.wait_ready(timeout_s=30), pool.last_error
        ws = _workspace(tmp_path, "agent")
        with agent.open_sandbox(ws, []) as sb:
            assert sb.events[0].get("pooled") is True
            assert sb.run("print(open('task.txt').read())").stdout == "files of agent\n"
        assert shared_pool(Settings(home=mmat_home, sandbox_pool=0)) is None
    finally:
        close_shared_pools()


def test_a_fork_of_a_pooled_sandbox_takes_a_warm_worker_too(tmp_path, mmat_home):
    with SandboxPool(2, limits=FAST) as pool:
        assert pool.wait_ready(timeout_s=30), pool.last_error
        ws = _workspace(tmp_path, "parent")
        with pool.acquire(ws, tools=FakeTools(ws)) as sb:
            sb.run("total = add(2, 3)\nopen('notes.txt', 'w').write('kept')")
            assert pool.wait_ready(timeout_s=30), pool.last_error
            child = sb.fork()
            try:
                assert child.events[0].get("pooled") is True and child.pool is pool
                assert child.run("print(total, open('notes.txt').read(), open('task.txt').read())").stdout == "5 kept files of parent\n"
                child.run("open('only_in_fork.txt', 'w').write('x')")
                assert not (view(ws) / "only_in_fork.txt").exists() and (view(child.workspace) / "only_in_fork.txt").exists()
            finally:
                child.close()
        assert pool.stats["warm"] == 2


def test_a_warm_sandbox_holds_the_quota_during_the_step(tmp_path, mmat_home):
    """Both modes: a warm worker's tmpfs is the quota's size; writing past it fails inside the step
    (ENOSPC), the step's files go, the next step prints 42 and what fit is in the directory after close."""
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    limits = Limits(wall_s=20, file_size_mb=1, workspace_mb=2)
    with SandboxPool(1, limits=limits) as pool:
        assert pool.wait_ready(timeout_s=30), pool.last_error
        ws = _workspace(tmp_path, "q")
        with pool.acquire(ws) as sb:
            assert sb.events[0].get("pooled") is True
            assert sb.run("open('kept.bin', 'wb').write(b'1' * 500_000)").error is None
            r = sb.run("n = 0\ntry:\n    for i in range(10):\n        open(f'part{i}', 'wb').write(b'0' * 500_000)\n        n += 1\n"
                       "except OSError as e:\n    print(e.errno, n)\n    raise")
            assert r.limit_hit == "workspace" and r.restarted and r.stdout.split()[:1] == ["28"], r.stdout
            assert int(r.stdout.split()[1]) <= 3
            assert sb.run("print(6 * 7)").stdout == "42\n"
    assert sorted(os.listdir(ws)) == ["kept.bin", "task.txt"] and (ws / "kept.bin").stat().st_size == 500_000
    assert canary.read_text() == "untouched" and sorted(os.listdir(tmp_path)) == ["canary.txt", "home", "q"]


def test_a_warm_worker_adopts_a_workspace_on_another_filesystem(tmp_path, mmat_home):
    """Both modes copy the workspace into the warm worker's own quota tmpfs, so where the workspace
    lives does not matter: the sandbox is a warm one, and the files come back to the directory."""
    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or os.stat(elsewhere).st_dev == os.stat(tmp_path).st_dev or not os.access(elsewhere, os.W_OK):
        pytest.skip("needs a writable /dev/shm on another filesystem than the test's temporary directory")
    far = Path(tempfile.mkdtemp(dir=elsewhere))
    try:
        with SandboxPool(1, limits=FAST) as pool:
            assert pool.wait_ready(timeout_s=30), pool.last_error
            ws = _workspace(far, "far")
            with pool.acquire(ws) as sb:
                assert sb.run("print(open('task.txt').read())\nopen('out.txt', 'w').write('made')").stdout == "files of far\n"
                assert sb.events[0].get("pooled") is True and pool.stats["warm"] == 1
            assert (ws / "task.txt").read_text() == "files of far" and (ws / "out.txt").read_text() == "made"
    finally:
        shutil.rmtree(far, ignore_errors=True)