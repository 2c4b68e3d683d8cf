"""A prefs run killed mid-way shows failed in `mmat runs`: SIGKILL (nothing left to write it: `mmat runs` tells
from the row's owner, the next run records it) and SIGTERM (the lifecycle records it before the process exits).
The `prefs` command records the command line as typed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.errors import StoreError
from mmat.pipeline.synth import SynthRequest, run_synth
from mmat.store import open_store
from mmat.store import read_sql

from .conftest import TOOLS

# prefs over the synthesized store with a slow scripted controller (each call 1 s), so it can be killed mid-walk
PREFS = textwrap.dedent("""
    import json, sys, time
    from mmat.config import load_settings
    from mmat.pipeline.prefs import PrefsRequest, run_prefs
    from mmat.testing import DummyLM, scripted

    scripted.register()

    def slow(messages, fields):
        time.sleep(1.0)
        return scripted.agent(messages, fields)

    def judge(messages, fields):
        n = len(json.loads(scripted.field(messages, "candidates")))
        return {"judgements": [{"candidate": i, "score": 0.5, "reason": "same"} for i in range(n)]}

    DummyLM(slow, name="slow")
    DummyLM(judge, name="judge")
    settings = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/slow",
                             judge="dummy/judge", concurrency=1, step_timeout_s=20)
    run_prefs(settings, PrefsRequest(k=1), command="mmat prefs --candidates 1", progress=False)
    print("FINISHED")
""")


def _walking(home, pid: int) -> bool:
    """The process runs the prefs run (its row names it as owner) and has started a walk."""
    try:
        owners = read_sql(home, "select owner from runs where kind = 'prefs' and status = 'running'").column(0)
    except StoreError:  # the process holds the file and does not serve reads yet
        return False
    return any(f" {pid} " in (o or "") for o in owners.to_pylist()) and any(home.glob("workspaces/prefs_*/*"))


def _prefs_until_walking(home):
    env = {**os.environ, "MMAT_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([sys.executable, "-c", PREFS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not _walking(home, proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, "prefs ended before it could be killed: " + proc.stderr.read()[-2000:]
    return proc


def _mounts_under(root) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(root))]


def _prefs_runs():
    listed = CliRunner().invoke(cli, ["runs", "--json"])
    assert listed.exit_code == 0, listed.output
    return [r for r in json.loads(listed.output) if r["kind"] == "prefs"]


@pytest.mark.slow
def test_a_prefs_run_killed_mid_way_shows_failed(synth_settings, scripted_models):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    home = synth_settings.home

    proc = _prefs_until_walking(home)
    assert [r["status"] for r in _prefs_runs()] == ["running"]  # read from the running process
    proc.kill()
    proc.wait()
    [run] = _prefs_runs()
    assert run["status"] == "failed" and run["summary"]["error"].startswith(f"abandoned: process {proc.pid} ")

    # root mode: the killed process's quota keeper takes its workspace mounts down (0.1 s after the kill,
    # files copied back); deleting the directories before that would run into a mount point (EBUSY)
    deadline = time.monotonic() + 5
    while _mounts_under(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _mounts_under(home) == []
    for leftover in home.glob("workspaces/prefs_*"):  # the killed walk's workspace stays behind
        shutil.rmtree(leftover)
    proc = _prefs_until_walking(home)  # the same command resumes the same run; starting it recorded the kill
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    [again] = _prefs_runs()
    assert again["run_id"] == run["run_id"]
    assert again["status"] == "failed" and again["summary"]["error"] == "terminated by SIGTERM"
    with open_store(synth_settings, read_only=True) as store:
        [row] = store.sql("select status, command, json_extract_string(summary, '$.error') error from runs "
                          "where kind = 'prefs'")
    assert row == {"status": "failed", "command": "mmat prefs --candidates 1", "error": "terminated by SIGTERM"}


def test_the_prefs_command_records_its_command_line(synth_settings, scripted_models, monkeypatch):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    args = ["prefs", "--candidates", "1", "--no-reference", "--limit", "1", "--quiet", "--judge", "dummy/verifier"]
    result = CliRunner().invoke(cli, args, env={"MMAT_TEACHER": "dummy/teacher", "MMAT_VERIFIER": "dummy/verifier",
                                                "MMAT_CONTROLLER": "dummy/agent"})
    assert result.exit_code == 0, result.output
    with open_store(synth_settings, read_only=True) as store:
        [run] = store.sql("select command, status from runs where kind = 'prefs'")
    assert run == {"command": "mmat " + " ".join(args), "status": "done"}
