"""The CLI over a synthesized store: synth, sql, runs, export (every format), and user errors."""

import json
import os

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.testing import scripted

from .conftest import TOOLS


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli") / "home"
    old = os.environ.get("MMAT_HOME")
    os.environ["MMAT_HOME"] = str(home)
    scripted.register()
    args = ["synth", "--tasks", "1", "--tools", ",".join(TOOLS), "-k", "1", "--quiet", "--teacher", "dummy/teacher",
            "--verifier", "dummy/verifier", "--controller", "dummy/agent"]
    result = CliRunner().invoke(cli, args, env={"MMAT_DEDUP_THRESHOLD": "0.99"})
    assert result.exit_code == 0, result.output
    assert "solved 2" in result.output and "select status, count(*) from tasks" in result.output
    yield home
    if old is None:
        os.environ.pop("MMAT_HOME", None)
    else:
        os.environ["MMAT_HOME"] = old


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_sql_table_json_and_csv(home):
    table = run("sql", "select status, count(*) as n from tasks group by 1 order by 1")
    assert table.exit_code == 0 and "rejected" in table.output and "(2 rows)" in table.output
    as_json = json.loads(run("sql", "select count(*) as n from trajectories", "--json").output)
    assert as_json == [{"n": 2}]
    assert run("sql", "select 1 as a, 'x' as b", "--csv").output.strip().splitlines() == ["a,b", "1,x"]


def test_bad_sql_is_one_line_and_exit_1(home):
    result = run("sql", "select nope from tasks")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "nope" in result.output and "Traceback" not in result.output


def test_runs_lists_the_synth_run(home):
    rows = json.loads(run("runs", "--json").output)
    assert [r["kind"] for r in rows] == ["synth"] and rows[0]["status"] == "done"


@pytest.mark.parametrize("fmt", ["parquet", "hf", "llamafactory", "swift", "openai"])
def test_export_every_format(home, tmp_path, fmt):
    result = run("export", fmt, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("selected 2 trajectories (default: ")
    assert "wrote 2 row(s), " in result.output and (tmp_path / "README.md").is_file()


def test_export_conversation_ends_on_the_final_answer_code(home, tmp_path):
    run("export", "swift", "--out", str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "mmat_sft.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and "final_answer(rows['rent'])" in row["messages"][-1]["content"]
        assert row["messages"][0]["role"] == "system"
        assert "inspect_file_as_text(" in row["messages"][1]["content"]  # the first turn lists the tools
    # the scripted controller is text-only: the agent saw the photo's name, never its pixels, and so does the export
    assert all("images" not in r for r in rows)  # a text-only dataset has no image column
    assert sum("photo.png" in r["messages"][1]["content"] for r in rows) == 1


def test_export_with_nothing_selected_says_how_to_fix(home, tmp_path):
    result = run("export", "swift", "--out", str(tmp_path), "--where", "FALSE")
    assert result.exit_code == 1 and "no trajectories match 'FALSE': run `mmat synth` first, or widen --where." in result.output


def test_sql_without_a_store_names_the_fix(tmp_path):
    result = CliRunner().invoke(cli, ["sql", "select 1", "--home", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output == f"Error: no store at {tmp_path / 'none' / 'mmat.duckdb'}: run `mmat demo` or `mmat synth` first, or set MMAT_HOME.\n"


def test_unknown_tool_is_rejected_before_any_work(home):
    result = run("synth", "--tasks", "1", "--tools", "telepathy", "--teacher", "dummy/teacher")
    assert result.exit_code == 1 and "unknown tool(s) telepathy: choose from" in result.output
