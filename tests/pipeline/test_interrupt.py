"""Ctrl-C on `mmat synth` against a slow loopback server: the first stops within seconds with status 130
and a summary, marks the run interrupted and a rerun completes exactly; a second Ctrl-C exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mmat.config import load_settings
from mmat.store import open_store
from mmat.testing.fault_server import FaultServer
from mmat.testing.scripted import SPECS_PER_SEED

SEEDS = 2


def _synth(home, server, *extra, **popen):
    env = {**os.environ, "MMAT_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MMAT_DEDUP_THRESHOLD": "0.99",
           "MMAT_STRUCTURED_OUTPUT": "json_schema", "MMAT_NUM_RETRIES": "0"}
    args = [sys.executable, "-m", "mmat.cli", "synth", "--teacher", "hosted_vllm/teacher", "--verifier", "hosted_vllm/verifier",
            "--controller", "hosted_vllm/agent", "--api-base", server.api_base, "--tasks", str(SEEDS), "-k", "1",
            "--tools", "inspect_file_as_text,visualizer", "--concurrency", "2", "--quiet", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _wait_for_calls(server, proc, n, limit_s=300):
    deadline = time.monotonic() + limit_s
    while server.chat_calls < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "synth ended before it could be interrupted: " + proc.stderr.read()[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "process"])
def test_first_ctrl_c_stops_within_seconds_and_a_rerun_completes(tmp_path, executor):
    home = tmp_path / "home"
    extra = ("--executor", executor, "--workers", "2")
    with FaultServer(latency_s=1.5) as server:  # every call in flight for 1.5 s
        proc = _synth(home, server, *extra, start_new_session=True)
        _wait_for_calls(server, proc, 4)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to the whole group, worker processes too
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
        assert proc.returncode == 130, err[-2000:]
        assert took < 10, f"exit took {took:.1f}s"
        assert "interrupted after" in out and "rerun the same command to continue" in out and "Traceback" not in err
        with open_store(load_settings(home=home), read_only=True) as store:
            assert [r["status"] for r in store.sql("select status from runs")] == ["interrupted"]
        calls_at_exit = server.chat_calls
        time.sleep(2.0)
        assert server.chat_calls == calls_at_exit  # nothing kept calling the server after the exit

    with FaultServer() as healed:
        rerun = _synth(home, healed, *extra)
        out, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err[-2000:]
    with open_store(load_settings(home=home), read_only=True) as store:
        assert store.sql("select count(*) n from synth_seeds where status = 'done'")[0]["n"] == SEEDS
        n, distinct = store.sql("select count(*) n, count(distinct task_id) d from tasks")[0].values()
        assert n == distinct == SEEDS * SPECS_PER_SEED
        assert [r["status"] for r in store.sql("select status from runs")] == ["done"]


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path):
    with FaultServer(latency_s=30.0) as server:  # calls that would hang far longer than the test
        proc = _synth(tmp_path / "home", server)
        _wait_for_calls(server, proc, 1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and time.monotonic() - sent < 5
        assert "second Ctrl-C: exiting now" in err or "stopping" in err
