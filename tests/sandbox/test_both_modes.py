"""The whole sandbox suite, once more as an unprivileged throwaway user: rootless mode, for real.

CI runs as root, so the root run is the suite itself; this test creates a system user, runs
``pytest tests/sandbox`` under it (setpriv: its uid/gid, no groups, no capabilities) and requires
that run to pass. The interpreter may live in a directory that user cannot enter (pyenv under
/root, mode 0700): the run gets a private mount namespace in which that directory is a fresh tmpfs
holding only read-only binds of the needed paths, so no host permission changes, even if the test
is killed. The user and its temporary directory are removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mmat
from mmat.testing.rootless import RootlessSetupError, missing_tools, python_paths, throwaway_user, unprivileged_command

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a throwaway user to run the rootless suite: needs root (CI runs as root)")

REPO = Path(mmat.__file__).resolve().parents[1]
# Tests that need what an unprivileged user does not have here: a writable cgroup (no delegation),
# or a mount on the host (root mode's quota tmpfs and its keeper).
ROOT_ONLY_HERE = {
    "test_memory_counts_every_process_of_the_sandbox",
    "test_tasks_are_counted_per_sandbox",
    "test_cgroup_v1_freezer",
    "test_quota_mounts_are_taken_down_when_mmat_is_killed",
    "test_keeper_takes_nested_mounts_down_last_first_and_forgets_mounts_never_made",
    "test_a_keeper_started_anew_is_told_every_live_mount",
    # needs /dev/shm on another filesystem than the temporary directory (a machine may not have one)
    "test_a_warm_worker_adopts_a_workspace_on_another_filesystem",
    # a rootless decoder keeps the caller's uid: there is no runtime view to check
    "test_a_stranger_decoder_still_reaches_a_runtime_under_a_closed_directory",
}
INNER_TIMEOUT_S = 900


@pytest.mark.timeout(INNER_TIMEOUT_S + 120)  # the inner run's own limit comes first, with its output
def test_the_sandbox_suite_passes_as_an_unprivileged_user():
    if missing_tools():
        pytest.skip(f"needs {', '.join(missing_tools())} (util-linux, passwd)")
    work = Path(tempfile.mkdtemp(prefix="mmat-rootless-"))
    try:
        with throwaway_user() as (uid, gid):
            os.chmod(work, 0o755)
            home = work / "home"
            home.mkdir()
            os.chown(home, uid, gid)
            junit = home / "junit.xml"
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(home),
            }  # fmt: skip
            argv = [
                sys.executable, "-m", "pytest", "tests/sandbox", "-q", "-p", "no:cacheprovider", "-rfEs", "-W", "ignore", "--tb=short",
                f"--basetemp={home / 'pytest'}", f"--junitxml={junit}",
            ]  # fmt: skip
            try:
                cmd = unprivileged_command(argv, uid, gid, paths=python_paths(REPO), env=env, cwd=REPO, stage=work / "stage")
            except RootlessSetupError as e:
                pytest.skip(f"cannot run the suite from here as another user: {e}")
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=INNER_TIMEOUT_S)
            out = run.stdout + run.stderr
            failed = "\n".join(line for line in out.splitlines() if line.startswith(("FAILED", "ERROR")))
            assert run.returncode == 0, f"the sandbox suite failed as uid {uid} (rootless mode):\n{failed}\n{out[-6000:]}"
            outcome: dict[str, str] = {}
            for case in ET.parse(junit).getroot().iter("testcase"):
                kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
                outcome[f"{case.get('classname')}.{case.get('name')}"] = kind
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert not [k for k, v in outcome.items() if v in ("failure", "error")]
    skipped = {k.rsplit(".", 1)[1] for k, v in outcome.items() if v == "skipped"}
    # only this test itself (needs root) and the root-only ones may skip; everything else ran rootless
    assert skipped <= ROOT_ONLY_HERE | {"test_the_sandbox_suite_passes_as_an_unprivileged_user"}, skipped
    assert sum(v == "passed" for v in outcome.values()) >= 80
    assert outcome["tests.sandbox.test_isolation.test_mode_is_chosen_automatically"] == "passed"
