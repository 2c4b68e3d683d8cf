"""The one run lifecycle: every way a run can end is recorded — done, an exception, Ctrl-C, SIGTERM, and a
SIGKILL (no process left to write anything: the next run, and `mmat runs` before it, say failed)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.store import Store, run_lifecycle
from mmat.store.runs import RunTerminated, mark_abandoned_runs, owner_alive, process_owner


def _row(store, run_id):
    row = store.sql("SELECT status, summary, settings, owner, finished_at FROM runs WHERE run_id = ?", [run_id])[0]
    return {**row, "summary": json.loads(row["summary"]) if row["summary"] else None,
            "settings": json.loads(row["settings"])}


def test_done_keeps_the_summary_status_and_settings_update(store):
    with run_lifecycle(store, "optimize", {"teacher": "dummy/t"}, "mmat optimize") as run:
        assert _row(store, run.run_id)["status"] == "running"
        assert _row(store, run.run_id)["owner"] == process_owner()
        run.summary = {"n": 3}
        run.settings_update = {"compiled": {"path": "/x.json"}}
    row = _row(store, run.run_id)
    assert row["status"] == "done" and row["summary"] == {"n": 3} and row["finished_at"] is not None
    assert row["settings"] == {"teacher": "dummy/t", "compiled": {"path": "/x.json"}}


def test_an_exception_is_failed_with_its_one_line_reason_and_the_summary_so_far(store):
    with pytest.raises(ValueError), run_lifecycle(store, "import", {}, "mmat import x") as run:
        run.summary = {"trajectories": 2}
        raise ValueError("row 7 is broken\nsecond line")
    row = _row(store, run.run_id)
    assert row["status"] == "failed"
    assert row["summary"] == {"trajectories": 2, "error": "ValueError: row 7 is broken"}


def test_ctrl_c_is_interrupted_and_the_status_a_command_sets_is_kept(store):
    with pytest.raises(KeyboardInterrupt), run_lifecycle(store, "eval", {}, "mmat eval") as run:
        raise KeyboardInterrupt
    assert _row(store, run.run_id)["status"] == "interrupted"
    with run_lifecycle(store, "synth", {}, "mmat synth") as run:
        run.status = "failed"
    assert _row(store, run.run_id)["status"] == "failed"


def test_sigterm_in_the_block_fails_the_run_and_the_handler_is_restored(store):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunTerminated) as raised, run_lifecycle(store, "prefs", {}, "mmat prefs") as run:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread long before
    assert raised.value.code == 143
    assert _row(store, run.run_id)["summary"]["error"] == "terminated by SIGTERM"
    assert _row(store, run.run_id)["status"] == "failed"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_row_left_running_by_this_process_is_abandoned_only_when_no_block_runs_it(store):
    with run_lifecycle(store, "eval", {}, "mmat eval a") as live:
        leftover = store.start_run("synth", {}, "mmat synth")  # started, never finished: like a forgotten run
        from mmat.store.runs import _active

        _active.discard(leftover)
        assert mark_abandoned_runs(store) == [leftover]  # the live run is not touched
        assert _row(store, live.run_id)["status"] == "running"
    row = _row(store, leftover)
    assert row["status"] == "failed" and row["summary"]["error"].startswith(f"abandoned: process {os.getpid()} on ")


def test_owner_alive():
    assert owner_alive(process_owner()) is True
    assert owner_alive("elsewhere 1 99") is None and owner_alive(None) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner_alive(process_owner().replace(f" {os.getpid()} ", f" {dead.pid} ", 1)) is False
    assert owner_alive(process_owner()[: process_owner().rindex(" ")] + " 1") is False  # same pid, other start


def _start(db):
    """A process inside a run, blocked; its run_id once the row is written."""
    proc = subprocess.Popen([sys.executable, "-c", _LONG_RUN, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    return proc, run_id


# The run's store is opened for each write (like finetune's), so the parent can read the file meanwhile.
_LONG_RUN = textwrap.dedent("""
    import sys, time
    from mmat.store import Store, run_lifecycle
    opener = lambda: Store.open(sys.argv[1], serve_reads=False)
    with run_lifecycle(opener, "prefs", {"k": 3}, "mmat prefs --candidates 3") as run:
        print(run.run_id, flush=True)
        time.sleep(60)
""")


def test_sigterm_from_outside_marks_the_run_failed(tmp_path):
    db = tmp_path / "mmat.duckdb"
    proc, run_id = _start(db)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    with Store.open(db, read_only=True) as store:
        row = _row(store, run_id)
    assert row["status"] == "failed" and row["summary"]["error"] == "terminated by SIGTERM"


def test_sigkill_shows_failed_in_mmat_runs_and_the_next_run_records_it(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MMAT_HOME", str(home))
    proc, run_id = _start(home / "mmat.duckdb")
    listed = CliRunner().invoke(cli, ["runs", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["status"] for r in json.loads(listed.output) if r["run_id"] == run_id] == ["running"]  # still alive

    proc.kill()
    proc.wait()
    listed = CliRunner().invoke(cli, ["runs", "--json"])
    [shown] = [r for r in json.loads(listed.output) if r["run_id"] == run_id]
    assert shown["status"] == "failed" and shown["summary"]["error"].startswith(f"abandoned: process {proc.pid} ")
    with Store.open(home / "mmat.duckdb", read_only=True) as store:
        assert _row(store, run_id)["status"] == "running"  # only shown so: `mmat runs` writes nothing

    with Store.open(home / "mmat.duckdb") as store:
        with run_lifecycle(store, "eval", {}, "mmat eval"):
            pass
        row = _row(store, run_id)
    assert row["status"] == "failed" and "killed, e.g. SIGKILL" in row["summary"]["error"]


def test_resume_markers_belong_to_the_run(store):
    from mmat.errors import StoreError

    with run_lifecycle(store, "prefs", {}, "mmat prefs") as run:
        run.mark_unit("prefs_tasks", "t1", "done", n_pairs=2)
        run.mark_unit("prefs_tasks", "t2", "failed", reason="SandboxError: boom")
        with pytest.raises(StoreError, match="a unit ends done or failed"):
            run.mark_unit("prefs_tasks", "t3", "running")
        with pytest.raises(StoreError, match="'tasks' is not a resume marker table"):
            run.done_units("tasks")
    assert run.done_units("prefs_tasks") == {"t1"}
    assert run.units("prefs_tasks")["t2"]["reason"] == "SandboxError: boom"
    with run_lifecycle(store, "prefs", {}, "mmat prefs --other") as other:
        assert other.done_units("prefs_tasks") == set()  # another run's markers are its own
    with run_lifecycle(lambda: contextlib.nullcontext(store), "finetune", {}, "mmat finetune sft") as held_briefly:
        with pytest.raises(StoreError, match="started without an open store"):
            held_briefly.done_units("prefs_tasks")
