"""The run report's figures against plain SQL over the same store, its text, and the static folder."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat.pipeline.report import build_report, normalize_reason, reason_texts
from mmat.store import Store
from tests.view.storefix import RUN, RUN_B


@pytest.fixture
def store(view_settings):
    with Store.open(view_settings.db_path, read_only=True) as s:
        yield s


def one(store, query, params=(RUN,)):
    return store.sql(query, list(params))[0]["n"]


def test_stage_counts_match_sql(store):
    report = build_report(store, RUN)
    stages = {s.stage: s.n for s in report.stages}
    assert stages["task specs written"] == one(store, "SELECT count(*) AS n FROM tasks WHERE run_id = ?") == 5
    assert stages["specs accepted"] == one(store, "SELECT count(*) AS n FROM tasks WHERE run_id = ? AND intended_tools IS NOT NULL") == 4
    assert stages["files made"] == 3  # task-files failed at its files
    assert stages["query-file verified"] == one(store, "SELECT count(*) AS n FROM verdicts WHERE verifier = 'query_file' AND passed "
                                                "AND subject_id IN (SELECT task_id FROM tasks WHERE run_id = ?)") == 3
    assert stages["trajectories"] == one(store, "SELECT count(*) AS n FROM trajectories WHERE run_id = ?") == 3
    assert stages["passed task rule checks"] == 3  # task-files has no rules verdict and made no files
    assert stages["passed rule checks"] == 2 and stages["passed LM verifier"] == 2
    assert stages["kept (verdict correct)"] == report.kept == one(
        store, "SELECT count(*) AS n FROM trajectories WHERE run_id = ? AND verdict = 'correct'") == 2
    assert stages["tasks solved"] == one(store, "SELECT count(*) AS n FROM tasks WHERE run_id = ? AND status = 'solved'") == 2


def test_rejection_reasons_keep_rules_and_lm_apart(store):
    report = build_report(store, RUN)
    rules = {c.name: (c.n, c.example) for c in report.rule_rejections}
    assert rules == {"final_answer_called": (1, "final_answer was never called (status fallback)"),
                     "answer_not_degenerate": (1, "the answer repeats one phrase # times"),
                     "expected_answer: mismatch": (1, None)}  # last_step_clean was superseded by a newer verdict
    assert {c.name for c in report.lm_rejections} >= {"trajectory: answer is # characters of junk"}
    assert not any("final_answer" in c.name for c in report.lm_rejections)
    failed_sql = one(store, "SELECT count(*) AS n FROM (SELECT unnest(CAST(reasons AS VARCHAR[])) FROM verdicts "
                     "WHERE verifier = 'rules' AND NOT passed AND verdict_id <> 'old-rules-doc' "
                     "AND subject_id IN (SELECT traj_id FROM trajectories WHERE run_id = ?))")
    assert sum(c.n for c in report.rule_rejections if c.name in ("final_answer_called", "answer_not_degenerate")) == failed_sql == 2
    assert {c.name: c.n for c in report.task_rejections} == {
        "files: photo_#.jpg: no pool image matched": 1, "near-duplicate of an earlier query": 1,
        "none of # trajectories was verified correct": 1}
    rates = {(v.verifier, v.subject_kind): (v.n, v.passed) for v in report.verdict_rates}
    assert rates == {("query_file", "task"): (3, 3), ("rules", "task"): (2, 2), ("rules", "trajectory"): (3, 2),
                     ("trajectory", "trajectory"): (3, 2), ("expected_answer", "trajectory"): (1, 0)}


def test_diversity_figures_match_sql(store):
    report = build_report(store, RUN)
    domains = store.sql("SELECT domain, count(*) AS tasks FROM tasks WHERE run_id = ? GROUP BY 1", [RUN])
    assert {d.domain: d.tasks for d in report.domains} == {r["domain"]: r["tasks"] for r in domains}
    assert {d.domain: d.kept for d in report.domains} == {"geography": 1, "finance": 1}
    assert {c.name: c.n for c in report.tool_combinations} == {"ocr + visualizer": 1, "inspect_file_as_text": 1, "ocr": 1}
    steps = store.sql("SELECT n_steps, count(*) AS n FROM trajectories WHERE run_id = ? GROUP BY 1", [RUN])
    assert {b.n_steps: b.trajectories for b in report.step_histogram} == {r["n_steps"]: r["n"] for r in steps}
    assert {c.name: c.n for c in report.answer_types} == {"number": 2, "text": 2}
    nd = report.near_duplicates
    assert (nd.specs, nd.rejected_as_duplicate, nd.accepted, nd.threshold) == (5, 1, 4, 0.9)
    assert nd.accepted_with_neighbour == 2  # task-xss's embedding sits next to task-img's


def test_lm_usage_cost_and_latency_percentiles_match_sql(store):
    report = build_report(store, RUN)
    rows = store.sql("SELECT module, model, count(*) AS n, sum(cost) AS cost, sum(prompt_tokens) AS p, "
                     "quantile_cont(latency_ms, 0.9) AS p90 FROM lm_calls WHERE run_id = ? GROUP BY ALL", [RUN])
    by_key = {(u.module, u.model): u for u in report.lm_usage}
    assert len(by_key) == len(rows) == 3
    for r in rows:
        u = by_key[r["module"], r["model"]]
        assert (u.calls, u.prompt_tokens) == (r["n"], r["p"])
        assert u.cost == pytest.approx(r["cost"]) and u.latency_p90_ms == pytest.approx(r["p90"])
    agent = by_key["CodeAgent", "dummy/agent"]
    assert agent.errors == 1 and agent.latency_p50_ms == pytest.approx(450.0)
    total = one(store, "SELECT sum(cost) AS n FROM lm_calls WHERE run_id = ?")
    assert report.total_cost == pytest.approx(total) and report.cost_per_kept == pytest.approx(total / 2)


def test_throughput_buckets_count_every_row(store):
    report = build_report(store, RUN)
    assert report.bucket_s == 5
    assert sum(b.trajectories for b in report.throughput) == 3 and sum(b.kept for b in report.throughput) == 2
    assert sum(b.tasks for b in report.throughput) == 5 and sum(b.lm_calls for b in report.throughput) == 7


def test_overlap_with_a_benchmark_file(store, tmp_path):
    bench = tmp_path / "gta.json"
    words = "By how much did revenue grow according to the attached note and table"  # 14 words of task-doc's query
    bench.write_text(json.dumps({"0": {"tools": [], "files": [], "gt_answer": {"whitelist": [["12"]], "blacklist": None},
                                       "dialogs": [{"role": "user", "content": words + "?"}]},
                                 "1": {"tools": [], "files": [], "gt_answer": {"whitelist": [["x"]], "blacklist": None},
                                       "dialogs": [{"role": "user", "content": "An unrelated question about cats and dogs?"}]}}))
    report = build_report(store, RUN, benches=[bench])
    (o,) = report.overlaps
    assert (o.bench_queries, o.queries, o.overlapping, o.kept_overlapping) == (2, 5, 1, 1)


def test_default_run_is_the_newest_synthesis_and_unknown_runs_say_how_to_list(store):
    from mmat.errors import ConfigError

    assert build_report(store).run_id == RUN  # run-prefs is newer than run-synth-b but is not a synthesis
    assert build_report(store, RUN_B).kept == 1
    with pytest.raises(ConfigError, match="mmat runs"):
        build_report(store, "nope")


def test_an_eval_run_has_a_report_too(store):
    report = build_report(store, "eval-base")
    assert report.kind == "eval" and report.stages[0].n == 0


@pytest.mark.parametrize("stored, texts", [
    (json.dumps(["a", "b"]), ["a", "b"]),
    (json.dumps("just text"), ["just text"]),
    (json.dumps([{"check": "final_answer_called", "reason": "never called"}]), ["never called"]),
    (json.dumps({"check": "x"}), ["x"]),
    (None, []),
    ("not json at all", ["not json at all"]),
])
def test_reasons_are_read_whatever_their_shape(stored, texts):
    assert reason_texts(stored) == texts


def test_normalize_reason_groups_numbers():
    assert normalize_reason("none of 3 trajectories") == normalize_reason("none of 12 trajectories")
    assert len(normalize_reason("x" * 500)) == 120


def test_mmat_report_prints_and_writes_a_static_folder(view_settings, tmp_path):
    from mmat.cli import cli

    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--run", RUN, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"run {RUN} (synth, done, 90s)" in result.output
    assert "final_answer_called (e.g. final_answer was never called" in result.output and "per kept trajectory: $0.1400" in result.output
    index = (out / "index.html").read_text()
    assert "/assets/" not in index and "http" not in index.split("<main>")[0]  # nothing to fetch from a server
    images = re.findall(r'src="([^"]+)"', index)
    assert images and all((out / src).is_file() and (out / src).read_bytes().startswith(b"<?xml") for src in images)
    assert (out / "style.css").is_file() and json.loads((out / "report.json").read_text())["kept"] == 2
    assert "&lt;script&gt;window.__pwned" in index and "<script>window" not in index


def test_mmat_report_on_an_empty_home_says_what_to_run(tmp_path, monkeypatch):
    from mmat.cli import cli

    monkeypatch.setenv("MMAT_HOME", str(tmp_path / "nothing"))
    result = CliRunner().invoke(cli, ["report"])
    assert result.exit_code == 1 and "mmat demo" in result.output


def test_mmat_view_refuses_a_missing_store_with_a_message(tmp_path, monkeypatch):
    from mmat.cli import cli

    monkeypatch.setenv("MMAT_HOME", str(tmp_path / "nothing"))
    result = CliRunner().invoke(cli, ["view", "--port", "8799"])
    assert result.exit_code == 1 and "no store" in result.output


def test_mmat_report_while_another_process_writes_the_store(fresh_store):
    import subprocess
    import sys

    from mmat.cli import cli
    from tests.view.test_app import HOLD

    settings, _ = fresh_store
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(settings.db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        result = CliRunner().invoke(cli, ["report", "--run", RUN])
    finally:
        writer.communicate("\n", timeout=60)
    assert result.exit_code == 0, result.output
    assert "note: answered by the process writing the store" in result.stderr
    assert f"run {RUN} (synth, done, 90s)" in result.stdout
