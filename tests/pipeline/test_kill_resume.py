"""SIGKILL a synth subprocess mid-run, rerun it, and get exactly the rows of an uninterrupted run — with units run
one after another (concurrency 1) and interleaved across seeds and tasks (concurrency 4)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mmat.config import load_settings
from mmat.store import open_store
from mmat.testing.scripted import SPECS_PER_SEED, STEPS_PER_TRAJECTORY, VERIFIED_PER_SEED

SEEDS = 3
SCRIPT = textwrap.dedent("""
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.testing import scripted

    scripted.register(latency_s=0.05)
    settings = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                             dedup_threshold=0.99, concurrency={concurrency})
    run_synth(settings, SynthRequest(tasks={seeds}, tools=["inspect_file_as_text", "visualizer"], trajectories_per_task=1),
              progress=False)
    print("FINISHED")
""")


def _synth(home, concurrency, kill_when=None, delay=0.0):
    env = {**os.environ, "MMAT_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    script = SCRIPT.format(seeds=SEEDS, concurrency=concurrency)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_when is None:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "FINISHED" in out, err[-2000:]
        return
    deadline = time.monotonic() + 600
    while not kill_when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, "synth finished before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 4])
def test_sigkill_then_rerun_gives_exact_counts(tmp_path, concurrency):
    home = tmp_path / "home"
    # concurrency 1: seed 0 is done, seed 1 under way; 4: seeds and their tasks interleave, some trajectories run
    started = "workspaces/*/seed_1" if concurrency == 1 else "workspaces/*/seed_1/task_*/traj_0"
    _synth(home, concurrency, kill_when=lambda: any(home.glob(started)), delay=1.0 if concurrency == 1 else 0.3)
    _synth(home, concurrency)
    with open_store(load_settings(home=home), read_only=True) as store:
        one = lambda q: store.sql(q)[0]["n"]  # noqa: E731
        assert one("select count(*) n from synth_seeds where status = 'done'") == SEEDS
        assert one("select count(*) n from tasks") == SEEDS * SPECS_PER_SEED
        assert one("select count(distinct task_id) n from tasks") == SEEDS * SPECS_PER_SEED
        assert one("select count(*) n from trajectories") == SEEDS * VERIFIED_PER_SEED
        assert one("select count(*) n from steps") == SEEDS * VERIFIED_PER_SEED * STEPS_PER_TRAJECTORY
        assert one("select count(*) n from files") == SEEDS * (1 + 2 + 1)  # csv; photo + csv; log (rejected task)
        # per seed: an LM verdict and a rules verdict per task and per trajectory, and an expected-answer check per
        # trajectory (both verified tasks have an expected answer)
        assert one("select count(*) n from verdicts") == SEEDS * (2 * (SPECS_PER_SEED + VERIFIED_PER_SEED) + VERIFIED_PER_SEED)
        assert one("select count(*) n from query_embeddings") == SEEDS * SPECS_PER_SEED
        statuses = store.sql("select status from runs")
        assert [r["status"] for r in statuses] == ["done"]
