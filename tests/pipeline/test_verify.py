"""`mmat verify` on a synthesized store: new verdict rows, old ones kept, trajectories untouched."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.config import load_settings
from mmat.store import open_store
from mmat.testing import DummyLM, scripted

from .conftest import TOOLS

DEGENERATE = "Your task is incomplete. " * 16


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("verify") / "home"
    old = os.environ.get("MMAT_HOME")
    os.environ["MMAT_HOME"] = str(home)
    scripted.register()
    args = ["synth", "--tasks", "1", "--tools", ",".join(TOOLS), "-k", "1", "--quiet", "--teacher", "dummy/teacher",
            "--verifier", "dummy/verifier", "--controller", "dummy/agent"]
    result = CliRunner().invoke(cli, args, env={"MMAT_DEDUP_THRESHOLD": "0.99"})
    assert result.exit_code == 0, result.output
    yield home
    if old is None:
        os.environ.pop("MMAT_HOME", None)
    else:
        os.environ["MMAT_HOME"] = old


def snapshot(home):
    with open_store(load_settings(home=home), read_only=True) as store:
        return {
            "trajectories": store.sql("SELECT * FROM trajectories ORDER BY traj_id"),
            "steps": store.sql("SELECT * FROM steps ORDER BY traj_id, idx"),
            "tasks": store.sql("SELECT * FROM tasks ORDER BY task_id"),
            "verdicts": store.sql("SELECT * FROM verdicts ORDER BY verdict_id"),
        }


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_synth_stored_rules_rows_for_every_task_and_trajectory(home):
    before = snapshot(home)
    rules = [v for v in before["verdicts"] if v["verifier"] == "rules"]
    verified_tasks = [t for t in before["tasks"] if t["status"] != "rejected" or (t["status_reason"] or "").startswith("query-file")]
    assert len(rules) == len(verified_tasks) + len(before["trajectories"])
    assert all(v["passed"] and json.loads(v["reasons"]) == [] and v["verdict"] == "pass" for v in rules)
    expected = [v for v in before["verdicts"] if v["verifier"] == "expected_answer"]
    assert len(expected) == len(before["trajectories"]) and all(v["verdict"] == "match" and v["model"] == "gaia" for v in expected)


def test_rules_only_adds_rows_and_changes_no_trajectory(home):
    before = snapshot(home)
    result = run("verify", "--rules-only", "--quiet")
    assert result.exit_code == 0, result.output
    after = snapshot(home)
    assert after["trajectories"] == before["trajectories"] and after["steps"] == before["steps"]
    assert after["tasks"] == before["tasks"]
    old = {v["verdict_id"]: v for v in before["verdicts"]}
    assert all(old[k] == v for k, v in ((v["verdict_id"], v) for v in after["verdicts"]) if k in old)
    new = [v for v in after["verdicts"] if v["verdict_id"] not in old]
    n_traj = len(before["trajectories"])
    assert sorted(v["verifier"] for v in new) == ["expected_answer"] * n_traj + ["rules"] * (n_traj + len({
        t["task_id"] for t in before["trajectories"]}))
    assert f"{n_traj} trajectory(ies)" in result.output and "rules only, no model asked" in result.output


def test_verify_catches_what_a_yes_saying_verifier_passed(home):
    settings = load_settings(home=home)
    with open_store(settings) as store:  # a degenerate fallback answer, as a weak verifier once let through
        target = store.sql("SELECT traj_id FROM trajectories ORDER BY traj_id LIMIT 1")[0]["traj_id"]
        store.writer.execute("UPDATE trajectories SET answer = ?, status = 'fallback' WHERE traj_id = ?", [DEGENERATE, target])
        store.writer.flush()
    before = snapshot(home)
    yes = DummyLM(lambda m, f: {"reasons": ["looks fine"], "passed": True, "rewritten_query": None} if "passed" in f and "verdict" not in f
                  else {"reasons": ["correct"], "verdict": "correct", "score": 1.0}, name="yes")
    result = run("verify", "--verifier", "dummy/yes", "--where", f"t.traj_id = '{target}'", "--quiet")
    assert result.exit_code == 0, result.output
    after = snapshot(home)
    assert after["trajectories"] == before["trajectories"] and after["steps"] == before["steps"]
    new = [v for v in after["verdicts"] if v["verdict_id"] not in {o["verdict_id"] for o in before["verdicts"]}]
    [rules] = [v for v in new if v["verifier"] == "rules" and v["subject_id"] == target]
    reasons = json.loads(rules["reasons"])
    assert not rules["passed"] and {r.split(": ")[0] for r in reasons} >= {"final_answer_called", "answer_not_degenerate",
                                                                         "expected_answer"}
    # the rules rejected it, so the yes-saying model never saw the trajectory (only the task's query-file check)
    assert not [v for v in new if v["verifier"] == "trajectory"]
    assert len(yes.calls) == 1 and "rules rejected 0 task(s) and 1 trajectory(ies)" in result.output


def test_a_bad_where_is_one_line_naming_the_columns(home):
    result = run("verify", "--where", "t.no_such_column = 1", "--rules-only")
    assert result.exit_code == 1 and "bad --where" in result.output and "k.* (tasks)" in result.output
    result = run("verify", "--where", "FALSE", "--rules-only")
    assert result.exit_code == 1 and "nothing matches --where 'FALSE'" in result.output
