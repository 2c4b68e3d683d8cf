"""Output fit for tools: --json (jq), --csv (pandas), table widths, one statement, `mmat show`."""

import io
import json
import shutil
import subprocess
from datetime import datetime

import pandas as pd
import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.store import Store

STARTED = datetime(2026, 11, 30, 12, 34, 56, 789000)
LONG = "x" * 300


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    with Store.open(home / "mmat.duckdb") as s:
        s.writer.put("runs", [{"run_id": "run1", "kind": "synth", "status": "done", "settings": {"teacher": "dummy/t", "k": 2},
                               "summary": {"counts": {"solved": 3}}, "started_at": STARTED, "command": LONG}])
        s.writer.put("lm_calls", [{"call_id": "c1", "run_id": "run1", "outputs": ['{"answer": "4"}'], "started_at": STARTED}])
        s.writer.put("tasks", [{"task_id": "task0001aa", "run_id": "run1", "query": "What is the total rent in march.csv?",
                                "status": "solved", "split": "train", "domain": "finance", "intended_tools": ["ocr"],
                                "expected_answer": "950"}])
        rel, sha = s.put_blob(b"month,rent\nmarch,950\n", ".csv")
        s.writer.put("files", [{"file_id": "f1", "task_id": "task0001aa", "name": "march.csv", "path": rel, "sha256": sha,
                                "modality": "table", "mime": "text/csv", "bytes": 21, "source": "generated", "position": 0}])
        s.writer.put("trajectories", [{"traj_id": "traj0001bb", "task_id": "task0001aa", "run_id": "run1", "attempt": 0,
                                       "controller": "dummy/agent", "answer": "950", "status": "answered", "verdict": "correct",
                                       "n_steps": 1, "n_errors": 0, "origin": "synth"}])
        s.writer.put("steps", [{"traj_id": "traj0001bb", "idx": 0, "thought": "Read the table first.",
                                "code": "print(inspect_file_as_text(file_path='march.csv'))", "observation": "march,950",
                                "tool_calls": [{"name": "inspect_file_as_text", "arguments": {"file_path": "march.csv"},
                                                "result": "march,950", "duration_ms": 3.0, "error": None}],
                                "images": [], "duration_ms": 12.0}])
        s.writer.put("verdicts", [{"verdict_id": "v1", "subject_kind": "trajectory", "subject_id": "traj0001bb",
                                   "verifier": "trajectory", "model": "dummy/verifier", "passed": True, "verdict": "correct",
                                   "score": 0.9, "reasons": ["the sum matches"]}])
    return home


def run(home, *args):
    result = CliRunner().invoke(cli, [*args, "--home", str(home)])
    return result


def test_json_columns_are_json_and_timestamps_iso(home):
    result = run(home, "sql", "select run_id, settings, summary, started_at from runs", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows == [{"run_id": "run1", "settings": {"teacher": "dummy/t", "k": 2}, "summary": {"counts": {"solved": 3}},
                     "started_at": "2026-11-30T12:34:56.789000"}]
    outputs = json.loads(run(home, "sql", "select outputs from lm_calls", "--json").output)[0]["outputs"]
    assert outputs == ['{"answer": "4"}']  # a list of the model's texts: one encoding, not three


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_jq_reads_json_columns_without_fromjson(home):
    result = run(home, "sql", "select settings from runs", "--json")
    out = subprocess.run(["jq", "-r", ".[0].settings.teacher"], input=result.output, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "dummy/t"


def test_csv_parses_with_pandas_timestamps_unquoted(home):
    result = run(home, "sql", "select run_id, started_at, settings from runs", "--csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("run1,2026-11-30T12:34:56.789000,")
    frame = pd.read_csv(io.StringIO(result.output), parse_dates=["started_at"])
    assert frame["started_at"][0] == pd.Timestamp(STARTED)
    assert json.loads(frame["settings"][0]) == {"teacher": "dummy/t", "k": 2}


def test_csv_of_an_empty_result_has_its_header(home):
    result = run(home, "sql", "select run_id, kind from runs where false", "--csv")
    assert result.exit_code == 0 and result.output == "run_id,kind\n"
    assert list(pd.read_csv(io.StringIO(result.output)).columns) == ["run_id", "kind"]


def test_table_cells_are_cut_unless_full(home):
    cut = run(home, "sql", "select command from runs")
    assert LONG not in cut.output.replace("\n", "") and "…" in cut.output
    narrow = run(home, "sql", "select command from runs", "--max-width", "10")
    assert "xxxxxxxxx…" in narrow.output and "xxxxxxxxxx" not in narrow.output
    full = run(home, "sql", "select command from runs", "--full")
    assert full.output.count("x") == 300 and "…" not in full.output


def test_several_statements_are_refused_with_a_message(home):
    result = run(home, "sql", "select 1; select 2")
    assert result.exit_code == 1
    assert "2 statements given (select 1; select 2): mmat runs one statement per query; run them one at a time" in result.output


def test_runs_json(home):
    rows = json.loads(run(home, "runs", "--json").output)
    assert rows[0]["run_id"] == "run1" and rows[0]["summary"] == {"counts": {"solved": 3}}


def test_show_a_trajectory_in_full(home):
    result = run(home, "show", "traj0001")
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ["trajectory traj0001bb", "What is the total rent in march.csv?", "march.csv (table, text/csv, 21 bytes",
                     "Read the table first.", "print(inspect_file_as_text(file_path='march.csv'))", "march,950",
                     'tool call inspect_file_as_text({"file_path": "march.csv"})', "trajectory (dummy/verifier): correct, score 0.9",
                     "the sum matches"]:
        assert expected in out, expected


def test_show_json_of_a_trajectory_and_a_task(home):
    record = json.loads(run(home, "show", "traj0001bb", "--json").output)
    assert record["kind"] == "trajectory" and record["task"]["task_id"] == "task0001aa"
    assert record["steps"][0]["tool_calls"][0]["arguments"] == {"file_path": "march.csv"}
    assert open(record["files"][0]["path"]).read() == "month,rent\nmarch,950\n"
    task = json.loads(run(home, "show", "task0001", "--json").output)
    assert task["kind"] == "task" and [t["traj_id"] for t in task["trajectories"]] == ["traj0001bb"]


def test_show_refuses_an_unknown_or_ambiguous_id(home):
    missing = run(home, "show", "nope")
    assert missing.exit_code == 1 and "no trajectory or task id starts with 'nope'" in missing.output
    ambiguous = run(home, "show", "t")
    assert ambiguous.exit_code == 1 and "'t' matches 2 ids" in ambiguous.output
