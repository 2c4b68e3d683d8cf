"""Label sheets out, labels in: round trip, all-or-nothing validation with line numbers, relabelling."""

import csv
import json

import pytest

from mmat.errors import ConfigError
from mmat.optimizers.labels import export_label_sheet, import_labels
from mmat.store import open_store

from .conftest import World


@pytest.fixture
def store(settings):
    with open_store(settings) as s:
        yield s


@pytest.fixture
def ids(store):
    w = World(store)
    task = w.task("k0")
    other = w.task("k1", rent=901)
    return {"task": task, "other": other, "right": w.trajectory(task, "950"), "wrong": w.trajectory(task, "no idea", attempt=1)}


def labels(store):
    return store.sql("select subject_kind, subject_id, passed, verdict, reasons from verdicts "
                     "where verifier = 'label' order by subject_id")


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows, fields=("subject_kind", "subject_id", "label", "note")):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def test_sheet_round_trip(store, ids, tmp_path):
    sheet = tmp_path / "trajectories.csv"
    assert export_label_sheet(store, sheet, "trajectory") == 2
    rows = read_csv(sheet)
    assert list(rows[0])[:4] == ["subject_kind", "subject_id", "label", "note"]
    by_id = {r["subject_id"]: r for r in rows}
    assert by_id[ids["wrong"]]["answer"] == "no idea" and by_id[ids["wrong"]]["verifier_verdict"] == "incorrect"
    assert by_id[ids["right"]]["query"].startswith("In the k0 budget file") and by_id[ids["right"]]["files"] == "march.csv (table)"
    assert all(r["label"] == "" for r in rows)
    # a person labels one row and leaves the other empty
    by_id[ids["wrong"]].update(label="Incorrect", note="never read the file")
    write_csv(sheet, list(by_id.values()), fields=list(rows[0]))
    assert import_labels(store, sheet) == 1
    assert labels(store) == [{"subject_kind": "trajectory", "subject_id": ids["wrong"], "passed": False,
                              "verdict": "incorrect", "reasons": '["never read the file"]'}]
    # the next sheet shows the label back; relabelling replaces it
    export_label_sheet(store, sheet, "trajectory")
    again = {r["subject_id"]: r for r in read_csv(sheet)}
    assert (again[ids["wrong"]]["label"], again[ids["wrong"]]["note"]) == ("incorrect", "never read the file")
    jsonl = tmp_path / "relabel.jsonl"
    jsonl.write_text(json.dumps({"subject_kind": "trajectory", "subject_id": ids["wrong"], "label": "correct"}) + "\n")
    assert import_labels(store, jsonl) == 1
    [row] = labels(store)
    assert row["passed"] is True and row["verdict"] == "correct" and row["reasons"] == "[]"


def test_trajectory_sheet_shows_each_step(store, ids, tmp_path):
    sheet = tmp_path / "t.csv"
    export_label_sheet(store, sheet, "trajectory")
    steps = {r["subject_id"]: r["steps"] for r in read_csv(sheet)}[ids["wrong"]]
    assert steps == ("Step 1\nThought: Read the table.\nCode:\nprint(inspect_file_as_text('march.csv'))\n"
                     "Observation: Tool calls:\ninspect_file_as_text(file_path='march.csv') returned:\n| rent | 950 |\n\n"
                     "Step 2\nThought: Answer.\nCode:\nfinal_answer('no idea')\nObservation: Final answer given: no idea")
    export_label_sheet(store, tmp_path / "t.jsonl", "trajectory")
    row = next(json.loads(l) for l in (tmp_path / "t.jsonl").read_text().splitlines() if ids["right"] in l)
    assert row["steps"].startswith("Step 1\nThought: Read the table.") and "final_answer('950')" in row["steps"]


def test_task_sheet_with_a_filter(store, ids, tmp_path):
    sheet = tmp_path / "tasks.csv"
    assert export_label_sheet(store, sheet, "task", where="expected_answer = '901'") == 1
    [row] = read_csv(sheet)
    assert row["subject_id"] == ids["other"] and row["verifier_verdict"] == "pass" and row["intended_tools"] == "inspect_file_as_text"
    with pytest.raises(ConfigError, match="label-sheet filter 'no_such_column = 1' failed"):
        export_label_sheet(store, sheet, "task", where="no_such_column = 1")


def test_bad_rows_name_their_lines_and_nothing_is_imported(store, ids, tmp_path):
    path = tmp_path / "labels.csv"
    write_csv(path, [
        {"subject_kind": "task", "subject_id": ids["task"], "label": "pass", "note": ""},  # line 2: fine
        {"subject_kind": "task", "subject_id": ids["other"], "label": "maybe", "note": ""},  # line 3
        {"subject_kind": "step", "subject_id": ids["other"], "label": "pass", "note": ""},  # line 4
        {"subject_kind": "task", "subject_id": ids["task"], "label": "reject", "note": ""},  # line 5: again
        {"subject_kind": "trajectory", "subject_id": "", "label": "correct", "note": ""},  # line 6
    ])
    with pytest.raises(ConfigError) as e:
        import_labels(store, path)
    message = str(e.value)
    assert "nothing imported" in message
    assert "line 3: label 'maybe' is not one of correct, incorrect, pass, reject" in message
    assert "line 4: subject_kind 'step' is not task or trajectory" in message
    assert f"line 5: task {ids['task']} is labelled again (first on line 2)" in message
    assert "line 6: subject_id is empty" in message
    assert labels(store) == []


def test_unknown_subjects_stop_the_whole_import(store, ids, tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"subject_kind": "trajectory", "subject_id": ids["right"], "label": "correct"},
        {"subject_kind": "trajectory", "subject_id": "deadbeef", "label": "incorrect"},
    ]))
    with pytest.raises(ConfigError, match="line 2: no trajectory deadbeef in the store"):
        import_labels(store, path)
    assert labels(store) == []


@pytest.mark.parametrize("name, content, message", [
    ("labels.csv", "id,label\nx,pass\n", "line 1: the header lacks the column(s) subject_kind, subject_id"),
    ("labels.jsonl", '{"subject_kind": "task"}\n[1]\n', "line 2: expected a JSON object"),
    ("labels.jsonl", "{oops\n", "line 1: not valid JSON"),
    ("labels.xlsx", "", "label files are .csv or .jsonl"),
])
def test_malformed_files(store, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        import_labels(store, path)


def test_missing_file(store, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        import_labels(store, tmp_path / "nope.csv")


def test_label_import_is_a_run(settings, tmp_path):
    """`mmat label import` records a `label` run: done with the count, or failed with the reason (nothing written)."""
    from click.testing import CliRunner

    from mmat.cli import cli

    with open_store(settings) as s:
        task = World(s).task("k0")
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    write_csv(good, [{"subject_kind": "task", "subject_id": task, "label": "pass", "note": ""}])
    write_csv(bad, [{"subject_kind": "task", "subject_id": "nope", "label": "pass", "note": ""}])
    env = {"MMAT_HOME": str(settings.home)}
    assert CliRunner().invoke(cli, ["label", "import", str(good)], env=env).exit_code == 0
    refused = CliRunner().invoke(cli, ["label", "import", str(bad)], env=env)
    assert refused.exit_code == 1
    with open_store(settings, read_only=True) as s:
        runs = s.sql("select status, command, json_extract_string(summary, '$.error') error, "
                     "json_extract(summary, '$.labels')::int labels from runs where kind = 'label' order by started_at")
        assert s.sql("select count(*) n from verdicts where verifier = 'label'")[0]["n"] == 1
    assert [(r["status"], r["command"], r["labels"]) for r in runs] == [
        ("done", f"mmat label import {good}", 1), ("failed", f"mmat label import {bad}", None)]
    assert runs[1]["error"].startswith("ConfigError: ")
