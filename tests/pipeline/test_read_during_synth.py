"""Watching a synth run from other processes: counts grow while it writes; a second writer is refused."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.errors import StoreError
from mmat.store import Store, read_sql

SEEDS = 4
SCRIPT = textwrap.dedent(f"""
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.testing import scripted

    scripted.register(latency_s=0.15)
    settings = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                             dedup_threshold=0.99, concurrency=1)
    run_synth(settings, SynthRequest(tasks={SEEDS}, tools=["inspect_file_as_text", "visualizer"], trajectories_per_task=1),
              progress=False)
    print("FINISHED")
""")


@pytest.mark.slow
def test_counts_grow_in_another_process_while_synth_writes(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "MMAT_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    running_seen = writer_refused = False
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if (home / "mmat.duckdb").exists():
                try:
                    n = read_sql(home, "select count(*) n from synth_seeds").column("n")[0].as_py()
                except Exception as e:  # the store is created but not migrated yet
                    assert "does not exist" in str(e) or "synth_seeds" in str(e), e
                else:
                    if proc.poll() is None:
                        seen.append(n)
                        result = CliRunner().invoke(cli, ["runs", "--json", "--home", str(home)])
                        assert result.exit_code == 0, result.output
                        running_seen |= any(r["status"] == "running" for r in json.loads(result.output))
                        if not writer_refused:  # a second writer waits WRITER_WAIT_S, then gets the clear error
                            with pytest.raises(StoreError, match=rf"is open in another process \(pid {proc.pid}\)"):
                                Store.open(home / "mmat.duckdb")
                            writer_refused = True
            time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "FINISHED" in out, err[-2000:]
    assert running_seen, "no read saw the run while it was running"
    assert writer_refused
    assert seen == sorted(seen) and len(set(seen)) >= 2, f"counts seen during the run: {seen}"
    assert read_sql(home, "select count(*) n from synth_seeds").column("n")[0].as_py() == SEEDS
