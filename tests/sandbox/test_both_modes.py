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
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import mmat
from mmat.sandbox.runtime import site_paths

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a throwaway user to run the rootless suite: needs root (CI runs as root)")

REPO = Path(mmat.__file__).resolve().parents[1]
# Tests that need what an unprivileged user does not have here: a writable cgroup (no delegation),
# or a mount on the host (the workspace quota tmpfs).
ROOT_ONLY_HERE = {
    "test_memory_counts_every_process_of_the_sandbox",
    "test_tasks_are_counted_per_sandbox",
    "test_inputs_larger_than_the_quota_are_a_clear_error",
}
INNER_TIMEOUT_S = 900


@contextmanager
def throwaway_user() -> Iterator[tuple[int, int]]:
    name = f"mmat-rl-{secrets.token_hex(4)}"
    for attempt in range(10):  # another useradd/userdel may hold the passwd lock for a moment
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", name],
            capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode == 0:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        pytest.fail(f"useradd {name} failed: {made.stderr.strip()}")
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        for attempt in range(10):
            if subprocess.run(["userdel", name], capture_output=True).returncode in (0, 6):  # 6: no such user
                break
            time.sleep(0.5 * (attempt + 1))


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _exposure_script(paths: list[Path], stage: Path) -> str:
    """Shell commands (run as root in a private mount namespace) that make `paths` reachable for any
    user: for each closed ancestor (e.g. /root, 0700) a tmpfs over it with read-only binds of the
    paths below it. The host's own directories are never touched."""
    needed = sorted({p.resolve() for p in paths})
    needed = [p for p in needed if not any(q != p and p.is_relative_to(q) for q in needed)]
    groups: dict[Path, list[Path]] = {}
    for p in needed:
        if _world_traversable(p):
            continue
        closed = [a for a in reversed([p, *p.parents]) if not a.stat().st_mode & 0o001]
        if closed[0] == p:
            pytest.skip(f"{p} itself is closed to other users (mode {oct(p.stat().st_mode & 0o777)}): cannot run the rootless suite from it")
        groups.setdefault(closed[0], []).append(p)
    lines = ["set -e"]
    n = 0
    for top, below in groups.items():
        staged = []
        for p in below:
            s = stage / str(n)
            n += 1
            lines += [f"mkdir -p {shlex.quote(str(s))}", f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(s))}"]
            staged.append((s, p))
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m mmat-expose {shlex.quote(str(top))}")
        for s, p in staged:
            lines += [
                f"mkdir -p {shlex.quote(str(p))}",
                f"mount --bind {shlex.quote(str(s))} {shlex.quote(str(p))}",
                f"mount -o remount,bind,ro {shlex.quote(str(p))}",
                f"umount {shlex.quote(str(s))}",
            ]
    return "\n".join(lines)


def test_the_sandbox_suite_passes_as_an_unprivileged_user():
    if shutil.which("setpriv") is None or shutil.which("unshare") is None or shutil.which("useradd") is None:
        pytest.skip("needs setpriv, unshare and useradd (util-linux, passwd)")
    python = Path(sys.executable)
    paths = [REPO, Path(sys.prefix), Path(sys.base_prefix), python.resolve().parent, *map(Path, site_paths())]
    work = Path(tempfile.mkdtemp(prefix="mmat-rootless-"))
    try:
        with throwaway_user() as (uid, gid):
            os.chmod(work, 0o755)
            home = work / "home"
            home.mkdir()
            os.chown(home, uid, gid)
            junit = home / "junit.xml"
            script = _exposure_script(paths, work / "stage")
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(home),
            }  # fmt: skip
            inner = [
                "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                str(python), "-m", "pytest", "tests/sandbox", "-q", "-p", "no:cacheprovider", "-rs",
                f"--basetemp={home / 'pytest'}", f"--junitxml={junit}",
            ]  # fmt: skip
            script += "\ncd " + shlex.quote(str(REPO)) + "\nexec " + shlex.join(inner)
            run = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                capture_output=True, text=True, timeout=INNER_TIMEOUT_S,
            )  # fmt: skip
            tail = (run.stdout + run.stderr)[-6000:]
            assert run.returncode == 0, f"the sandbox suite failed as uid {uid} (rootless mode):\n{tail}"
            cases = ET.parse(junit).getroot().iter("testcase")
            outcome: dict[str, str] = {}
            for case in cases:
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
