"""The workspace quota when mmat is killed: no mount and no staging directory is left, the files are back.

A real parent (a subprocess) holds cold sandboxes and warm-pool ones, each in the middle of a step, while
two threads keep acquiring and closing more (so quota mounts are being made and taken down at the moment
of the kill); it is SIGKILLed, repeatedly. Root mode: the keeper (mmat/sandbox/_quota_keeper.py) takes
every tmpfs down and the files the steps wrote are in their directories. Rootless mode: the tmpfs lived
in the sandbox's own mount namespace and died with it; the directories hold what they held before the
sandbox started (README, "What does not hold").
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import mmat

from .helpers import ROOTLESS, needs_sandbox

REPO = Path(mmat.__file__).resolve().parents[1]
TRIES = 10
# the keeper waits 0.1 s for the launchers, then copies; "within a couple of seconds"
SETTLE_S = 2.0

PARENT = r"""
import os, sys, threading, time
from pathlib import Path
from mmat.sandbox import Limits, Sandbox, SandboxPool

base, delay = Path(sys.argv[1]), float(sys.argv[2])
limits = Limits(wall_s=60)
pool = SandboxPool(2, limits=limits)
assert pool.wait_ready(2, 60)
held = []
for i in range(4):
    ws = base / f"ws{i}"
    ws.mkdir()
    (ws / "input.txt").write_text(f"in{i}")
    sb = pool.acquire(ws) if i % 2 else Sandbox(ws, limits=limits)
    assert sb.run(f"open('made.txt', 'w').write('made{i}')").error is None
    held.append(sb)

def busy(sb):  # mid-step at the kill: writing, never finishing
    sb.run("open('during.txt', 'w').write('x')\nwhile True:\n    open('busy.bin', 'wb').write(b'0' * 100_000)")

def churn(k):  # sandboxes being made and closed at the kill: mounts in flight
    for n in range(10_000):
        ws = base / f"churn{k}_{n}"
        ws.mkdir()
        with (pool.acquire(ws) if k else Sandbox(ws, limits=limits)) as sb:
            sb.run("open('c.txt', 'w').write('c')")

for sb in held:
    threading.Thread(target=busy, args=(sb,), daemon=True).start()
for k in range(2):
    threading.Thread(target=churn, args=(k,), daemon=True).start()
time.sleep(0.3 + delay)
print("ready", flush=True)
time.sleep(600)
"""


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(root))]


def _leftovers(base: Path) -> list[str]:
    return _mounts_under(base) + [name for name in os.listdir(base) if name.startswith("mmat-workspace-")]


@needs_sandbox
def test_sigkill_of_a_parent_with_sandboxes_mid_step_leaves_no_mount_and_the_files_back(tmp_path):
    for attempt in range(TRIES):
        base = Path(tempfile.mkdtemp(dir=tmp_path)).resolve()
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(base)}  # staging dirs land in base too
        proc = subprocess.Popen([sys.executable, "-c", PARENT, str(base), str(attempt * 0.037)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            line = proc.stdout.readline()
            assert line == "ready\n", proc.stderr.read()[-3000:] if proc.poll() is not None else line
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        deadline = time.monotonic() + SETTLE_S
        while _leftovers(base) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leftovers(base) == [], f"try {attempt}: left behind"
        for i in range(4):
            ws = base / f"ws{i}"
            names = sorted(os.listdir(ws))
            assert (ws / "input.txt").read_text() == f"in{i}", attempt
            if ROOTLESS:  # the tmpfs died with the namespace: the directory is as it was before the sandbox
                assert names == ["input.txt"], (attempt, names)
            else:
                assert {"input.txt", "made.txt", "during.txt"} <= set(names), (attempt, names)
                assert (ws / "made.txt").read_text() == f"made{i}"
        for churned in base.glob("churn*"):  # closed, or killed before or after its one step
            assert sorted(os.listdir(churned)) in ([], ["c.txt"]), (attempt, churned)
        proc.stderr.close()


_libc = ctypes.CDLL(None, use_errno=True)


def _tmpfs(target: Path, files: dict[str, str]) -> None:
    assert _libc.mount(b"mmat-workspace", str(target).encode(), b"tmpfs", 0, b"size=1m") == 0, os.strerror(ctypes.get_errno())
    for rel, text in files.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_text(text)


def _bind(source: Path, target: Path) -> None:
    assert _libc.mount(str(source).encode(), str(target).encode(), None, 4096, None) == 0, os.strerror(ctypes.get_errno())


@pytest.mark.skipif(ROOTLESS, reason="mounts on the host: root mode's keeper")
def test_keeper_takes_nested_mounts_down_last_first_and_forgets_mounts_never_made(tmp_path):
    """A mount made inside an earlier one is restored first (else its files would be lost with the outer
    one); an entry announced before its mount, with the parent killed in between, just goes away."""
    ws, outer, inner, never = tmp_path / "ws", tmp_path / "s-outer", tmp_path / "s-inner", tmp_path / "s-never"
    for d in (ws, outer, inner, never):
        d.mkdir()
    (ws / "old.txt").write_text("before the sandbox")
    try:
        _tmpfs(outer, {"a.txt": "A", "files/.keep": ""})
        _bind(outer, ws)
        _tmpfs(inner, {"b.txt": "B"})
        _bind(inner, ws / "files")  # a later sandbox's workspace inside the first one's
        lines = [("add", ws, outer), ("add", ws / "files", inner), ("add", never, never)]
        keeper = subprocess.run(
            [sys.executable, "-I", "-S", "-B", str(REPO / "mmat/sandbox/_quota_keeper.py")],
            input="".join(json.dumps({"op": op, "workspace": str(w), "staging": str(s)}) + "\n" for op, w, s in lines),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert keeper.returncode == 0 and keeper.stderr == "", keeper.stderr
        assert _mounts_under(tmp_path) == []
        assert sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*")) == ["a.txt", "files", "files/b.txt"]
        assert (ws / "files" / "b.txt").read_text() == "B"
        assert not outer.exists() and not inner.exists() and not never.exists()
    finally:
        for m in reversed(_mounts_under(tmp_path)):
            _libc.umount2(m.encode(), 2)


KEEPER_DIES = r"""
import os, signal, sys, time
from pathlib import Path
from mmat.sandbox import Limits, Sandbox, quota

base = Path(sys.argv[1])
first = Sandbox(base / "a", limits=Limits(wall_s=10))
assert first.run("open('a.txt', 'w').write('a')").error is None
os.kill(quota._keeper.pid, signal.SIGKILL)  # the keeper is gone: it knew of the first mount only
quota._keeper.wait()
second = Sandbox(base / "b", limits=Limits(wall_s=10))
assert second.run("open('b.txt', 'w').write('b')").error is None
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(ROOTLESS, reason="mounts on the host: root mode's keeper")
def test_a_keeper_started_anew_is_told_every_live_mount(tmp_path):
    base = tmp_path.resolve()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(base)}
    proc = subprocess.Popen([sys.executable, "-c", KEEPER_DIES, str(base)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()[-3000:] if proc.poll() is not None else ""
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + SETTLE_S
    while _leftovers(base) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(base) == []
    assert (base / "a" / "a.txt").read_text() == "a" and (base / "b" / "b.txt").read_text() == "b"
    proc.stdout.close()
    proc.stderr.close()
