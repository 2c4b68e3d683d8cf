"""`mmat synth` end to end as an unprivileged throwaway user: rootless sandboxes, tasks stored, and no
file outside that user's MMAT_HOME and temporary directory created by it or given to it.

Runs the CLI in a subprocess under ``setpriv`` (its uid/gid, no groups, no capabilities; see
mmat.testing.rootless) on the scripted dummy models (``MMAT_PLUGINS=mmat.testing.ray_world:register``
registers dummy/teacher, dummy/verifier and dummy/agent in that process). Skipped where no user can be
created (not root, no useradd/setpriv) or where that user gets no sandbox (user namespaces off).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest

import mmat
from mmat.testing.rootless import RootlessSetupError, missing_tools, python_paths, throwaway_user, unprivileged_command
from mmat.testing.scripted import SPECS_PER_SEED, VERIFIED_PER_SEED

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a throwaway user: needs root (CI runs as root)")

REPO = Path(mmat.__file__).resolve().parents[1]
SEEDS = 2


def _owned_by(uid: int, gid: int) -> set[str]:
    """Every path on the root filesystem and /dev/shm owned by uid or gid (a recycled system uid may
    own leftovers of an earlier user: the test compares before and after)."""
    out = subprocess.run(["find", "/", "/dev/shm", "-xdev", "(", "-uid", str(uid), "-o", "-gid", str(gid), ")", "-print"],
                         capture_output=True, text=True, timeout=300)
    return set(out.stdout.splitlines())


def _owners(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.join(dirpath, name)] = (st.st_uid, st.st_gid)
    return found


def test_synth_runs_as_an_unprivileged_user_in_rootless_mode():
    if missing_tools():
        pytest.skip(f"needs {', '.join(missing_tools())} (util-linux, passwd)")
    work = Path(tempfile.mkdtemp(prefix="mmat-rl-synth-"))  # not pytest's tmp_path: its parents are 0700
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        try:
            uid, gid = stack.enter_context(throwaway_user())
        except RootlessSetupError as e:
            pytest.skip(f"cannot create a throwaway user here: {e}")
        os.chmod(work, 0o755)
        home, tmp = work / "home", work / "tmp"
        for d in (home, tmp):
            d.mkdir()
            os.chown(d, uid, gid)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(tmp),
            "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "MMAT_HOME": str(home / "mmat"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MMAT_PLUGINS": "mmat.testing.ray_world:register",
            "MMAT_DEDUP_THRESHOLD": "0.99", "MMAT_SANDBOX_POOL": "1",
        }  # fmt: skip

        def as_user(*args: str, stage: str) -> subprocess.CompletedProcess[str]:
            try:
                cmd = unprivileged_command([sys.executable, "-m", "mmat.cli", *args], uid, gid, paths=python_paths(REPO),
                                           env=env, cwd=home, stage=work / stage)
            except RootlessSetupError as e:
                pytest.skip(f"cannot run mmat from here as another user: {e}")
            return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

        doctor = as_user("doctor", "--no-run", "--json", stage="s0")
        checks = {c["check"]: c for c in json.loads(doctor.stdout or "[]")}
        mode = checks.get("sandbox mode", {}).get("status")
        if mode != "rootless":
            pytest.skip(f"no rootless sandbox for an unprivileged user here: {checks.get('sandbox mode') or doctor.stderr[-500:]}")

        before, repo_before = _owned_by(uid, gid), _owners(REPO)
        run = as_user("synth", "--tasks", str(SEEDS), "--tools", "inspect_file_as_text,visualizer", "-k", "1",
                      "--concurrency", "2", "--quiet", "--teacher", "dummy/teacher", "--verifier", "dummy/verifier",
                      "--controller", "dummy/agent", stage="s1")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
        assert f"{SEEDS} seed(s) run" in run.stdout and "failed-by-error 0" in run.stdout, run.stdout

        counts = as_user("sql", "--json", "select status, count(*) as n from tasks group by 1 order by 1", stage="s2")
        assert counts.returncode == 0, counts.stderr[-3000:]
        statuses = {r["status"]: r["n"] for r in json.loads(counts.stdout)}
        assert sum(statuses.values()) == SEEDS * SPECS_PER_SEED, statuses
        assert statuses.get("solved", 0) == SEEDS * VERIFIED_PER_SEED, statuses

        # the store and the workspaces are the user's, inside its MMAT_HOME
        assert (home / "mmat" / "mmat.duckdb").stat().st_uid == uid
        new = sorted(p for p in _owned_by(uid, gid) - before if not p.startswith(f"{work}/"))
        assert new == [], f"files outside MMAT_HOME and TMPDIR became the user's: {new[:20]}"
        repo_after = _owners(REPO)  # (the test's own process may add root's files, e.g. __pycache__)
        changed = {p: (o, repo_after[p]) for p, o in repo_before.items() if p in repo_after and repo_after[p] != o}
        assert changed == {}
