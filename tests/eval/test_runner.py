"""The runner end to end with a scripted solver and a real Store: rows, metrics, errors, resume, compare."""

import json
import threading

import pytest

from mmat.config import load_settings
from mmat.errors import ConfigError, ModelOutputError, SandboxError
from mmat.eval.compare import compare_runs
from mmat.eval.items import EvalItem
from mmat.eval.outcome import AgentOutcome
from mmat.eval.runner import run_eval
from mmat.store import Store


@pytest.fixture
def store(mmat_home):
    st = Store.open(mmat_home / "mmat.duckdb")
    yield st
    st.close()


def _wl(key, alias, gold=("ocr",)):
    return EvalItem(key=key, question=f"question {key}", gt={"whitelist": [[alias]], "blacklist": None},
                    answer_kind="whitelist", gold_tool_calls=list(gold))


ITEMS = [
    _wl("0", "cat"),
    _wl("1", "dog"),
    _wl("2", "42"),
    EvalItem(key="3", question="describe", gt=["a poem"], answer_kind="subjective", gold_tool_calls=["visualizer"]),
]


def _scripted(answers, *, fail=()):
    """solve() answering from a table: (key, sample) -> answer; keys in `fail` raise ModelOutputError."""

    def solve(item, sample_idx):
        if (item.key, sample_idx) in fail:
            raise ModelOutputError("could not parse the step")
        return AgentOutcome(answer=answers.get((item.key, sample_idx), "no idea"), tools_called=["ocr", "final_answer"],
                            n_code_steps=2, n_code_errors=sample_idx % 2, n_steps=3, traj_id=f"t{item.key}{sample_idx}")

    return solve


def _run(store, solve, **kw):
    args = dict(store=store, bench="gta", bench_path="bench/dataset.json", controller="dummy/eval", progress=False)
    return run_eval(ITEMS, solve, **{**args, **kw})


def test_rows_and_metrics_with_best_of_n(store):
    answers = {("0", 0): "a cat", ("1", 1): "dog!", ("2", 1): "142", ("3", 0): "a poem"}
    result = _run(store, _scripted(answers, fail={("2", 0)}), best_of_n=2, concurrency=2,
                  settings=load_settings())
    rows = store.sql("SELECT * FROM eval_items WHERE eval_run_id = ? ORDER BY item_key, sample_idx", [result.eval_run_id])
    assert [(r["item_key"], r["sample_idx"]) for r in rows] == [(k, s) for k in "0123" for s in (0, 1)]
    by = {(r["item_key"], r["sample_idx"]): r for r in rows}
    assert json.loads(by[("0", 0)]["ans_acc"]) == {"mat": 1.0, "gta": 1.0, "gta_official": 1.0} and by[("0", 0)]["counted"]
    assert json.loads(by[("2", 1)]["ans_acc"]) == {"mat": 1.0, "gta": 0.0, "gta_official": 0.0}  # '42' inside '142'
    assert by[("2", 0)]["error"] == "solve failed: ModelOutputError: could not parse the step"
    assert by[("2", 0)]["answer"] is None and json.loads(by[("2", 0)]["ans_acc"]) == {"mat": 0.0, "gta": 0.0, "gta_official": 0.0}
    assert not by[("3", 0)]["counted"] and json.loads(by[("3", 0)]["ans_acc"]) == {}
    assert json.loads(by[("3", 0)]["gt"]) == ["a poem"] and by[("0", 1)]["traj_id"] == "t01"
    assert by[("0", 0)]["code_exec"] == 1.0 and by[("0", 1)]["code_exec"] == 0.5
    m = result.metrics
    assert m.greedy.ans_acc["mat"].correct == 1 and m.greedy.ans_acc["mat"].counted == 3
    assert m.best_of_n_ans_acc["mat"].correct == 3 and m.best_of_n_ans_acc["gta"].correct == 2
    assert m.greedy.n_errors == 1 and m.not_counted == {"subjective": 1}
    run = store.sql("SELECT * FROM eval_runs WHERE eval_run_id = ?", [result.eval_run_id])[0]
    assert run["bench"] == "gta" and run["controller"] == "dummy/eval" and run["best_of_n"] == 2 and run["n_items"] == 4
    assert json.loads(run["metrics"]) == m.model_dump(mode="json")
    assert json.loads(run["settings"])["agent_max_steps"] == load_settings().agent_max_steps
    assert "best-of-2 AnsAcc gta 66.7%, gta_official 66.7%, mat 100.0%" in result.summary


def test_items_run_concurrently(store):
    barrier = threading.Barrier(2, timeout=10)

    def solve(item, sample_idx):
        barrier.wait()  # only passes when two solves are in flight at once
        return AgentOutcome(answer="cat", n_steps=1)

    result = run_eval(ITEMS[:2], solve, store=store, bench="gta", bench_path="x", controller="c", concurrency=2,
                      progress=False)
    assert result.metrics.greedy.ans_acc["mat"].correct == 1


def test_a_bug_propagates_and_finished_rows_are_kept(store):
    def solve(item, sample_idx):
        if item.key == "2":
            raise RuntimeError("bug in the agent adapter")
        return AgentOutcome(answer="cat", n_steps=1)

    with pytest.raises(RuntimeError, match="bug in the agent adapter"):
        _run(store, solve, concurrency=1)
    keys = [r["item_key"] for r in store.sql("SELECT item_key FROM eval_items ORDER BY item_key")]
    assert keys == ["0", "1"]


def test_sandbox_errors_are_recorded_and_the_run_goes_on(store):
    def solve(item, sample_idx):
        if item.key == "0":
            raise SandboxError("worker could not start")
        return AgentOutcome(answer="dog", n_steps=1)

    result = _run(store, solve)
    assert result.metrics.greedy.n_errors == 1 and result.metrics.greedy.ans_acc["mat"].correct == 1


def test_rerun_resumes_and_redoes_only_failed_solves(store):
    first = _run(store, _scripted({("0", 0): "cat"}, fail={("1", 0)}))
    calls = []

    def solve(item, sample_idx):
        calls.append((item.key, sample_idx))
        return AgentOutcome(answer="dog", n_steps=1)

    second = _run(store, solve)
    assert second.eval_run_id == first.eval_run_id and second.resumed == 3 and calls == [("1", 0)]
    assert second.metrics.greedy.ans_acc["mat"].correct == 2 and second.metrics.greedy.n_errors == 0
    assert store.sql("SELECT count(*) AS n FROM eval_items")[0]["n"] == 4  # upserted, not duplicated
    fresh = _run(store, solve, resume=False)
    assert fresh.resumed == 0 and len(calls) == 5


def test_a_different_controller_is_a_different_run(store):
    a = _run(store, _scripted({}), controller="base")
    b = _run(store, _scripted({}), controller="tuned")
    assert a.eval_run_id != b.eval_run_id


def test_solver_must_return_an_outcome(store):
    with pytest.raises(TypeError, match="must return an AgentOutcome"):
        _run(store, lambda item, s: {"answer": "cat"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"best_of_n": 0}, "best_of_n must be at least 1"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
    ],
)
def test_bad_arguments_are_config_errors(store, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _run(store, _scripted({}), **kwargs)


def test_empty_and_duplicate_items_are_config_errors(store):
    with pytest.raises(ConfigError, match="no items to evaluate"):
        run_eval([], _scripted({}), store=store, bench="gta", bench_path="x", controller="c", progress=False)
    with pytest.raises(ConfigError, match=r"duplicate item keys \['0'\]"):
        run_eval([ITEMS[0], ITEMS[0]], _scripted({}), store=store, bench="gta", bench_path="x", controller="c",
                 progress=False)


def test_compare_runs_reads_stored_metrics(store):
    base = _run(store, _scripted({("0", 0): "cat"}), controller="base")
    tuned = _run(store, _scripted({("0", 0): "cat", ("1", 0): "dog", ("2", 0): "42"}), controller="tuned")
    comparison = compare_runs(store, base.eval_run_id[:6], tuned.eval_run_id)  # a unique prefix works
    deltas = {d.metric: d for d in comparison.deltas}
    mat = deltas["greedy.ans_acc.mat"]
    assert mat.a == pytest.approx(1 / 3) and mat.b == 1.0 and mat.delta == pytest.approx(2 / 3)
    assert deltas["n_items"].delta == 0.0
    assert (comparison.a.eval_run_id, comparison.a.controller) == (base.eval_run_id, "base")
    assert (comparison.b.eval_run_id, comparison.b.controller) == (tuned.eval_run_id, "tuned")
    assert comparison.settings_diff == []  # same settings: the controller differs, which is shown per run


def test_compare_lists_settings_that_differ_and_refuses_ambiguous_prefixes(store):
    base = _run(store, _scripted({}), settings=load_settings())
    other = _run(store, _scripted({}), settings=load_settings(agent_max_steps=3))
    diff = compare_runs(store, base.eval_run_id, other.eval_run_id).settings_diff
    assert [(d.key, d.a, d.b) for d in diff] == [("agent_max_steps", load_settings().agent_max_steps, 3)]
    metrics = json.loads(store.sql("SELECT metrics FROM eval_runs WHERE eval_run_id = ?", [base.eval_run_id])[0]["metrics"])
    store.writer.put("eval_runs", [{"eval_run_id": f"zz{n}", "bench": "gta", "metrics": metrics} for n in (1, 2)])
    store.writer.flush()
    with pytest.raises(ConfigError, match=r"prefix 'zz' matches 2 runs \(zz1, zz2\)"):
        compare_runs(store, "zz", base.eval_run_id)
    assert compare_runs(store, "zz2", "zz1").a.eval_run_id == "zz2"


def test_an_eval_run_is_a_run_and_its_items_join_its_trajectories(store):
    result = _run(store, _scripted({("0", 0): "cat"}), settings=load_settings())
    runs = store.sql("SELECT * FROM runs WHERE run_id = ?", [result.eval_run_id])
    assert len(runs) == 1 and runs[0]["kind"] == "eval" and runs[0]["status"] == "done"
    linked = store.sql("SELECT r.kind FROM eval_runs e JOIN runs r ON r.run_id = e.run_id WHERE e.eval_run_id = ?",
                       [result.eval_run_id])
    assert linked == [{"kind": "eval"}]
    task_ids = {r["task_id"] for r in store.sql("SELECT task_id FROM eval_items WHERE eval_run_id = ?", [result.eval_run_id])}
    assert task_ids == {f"eval:{result.eval_run_id}:{k}" for k in "0123"}


def test_a_run_that_crashes_is_marked_failed(store):
    def broken(item, sample_idx):
        raise RuntimeError("bug in the solver")

    with pytest.raises(RuntimeError):
        _run(store, broken)
    rows = store.sql("SELECT status, summary FROM runs WHERE kind = 'eval'")
    assert [r["status"] for r in rows] == ["failed"] and "bug in the solver" in rows[0]["summary"]


def test_compare_unknown_or_unfinished_run_is_a_config_error(store):
    done = _run(store, _scripted({}))
    with pytest.raises(ConfigError, match="no eval run 'nope' in the store"):
        compare_runs(store, done.eval_run_id, "nope")
    store.writer.put("eval_runs", [{"eval_run_id": "half", "bench": "gta", "metrics": None}])
    store.writer.flush()
    with pytest.raises(ConfigError, match="has no metrics"):
        compare_runs(store, "half", done.eval_run_id)


def test_progress_goes_to_stderr_and_stdout_stays_clean(store, capsys):
    _run(store, _scripted({}), progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "eval gta" in captured.err and "4/4" in captured.err
