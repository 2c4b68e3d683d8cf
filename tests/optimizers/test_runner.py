"""run_optimize end to end on scripted models: compiled files, recorded runs, the three optimizers."""

import json

import dspy
import pytest

from mmat.errors import ConfigError
from mmat.lm import build_lm
from mmat.optimizers import load_compiled, read_header
from mmat.pipeline.optimize import run_optimize
from mmat.optimizers.compiled import CompiledHeader, save_compiled
from mmat.optimizers.datasets import load_examples
from mmat.optimizers.metrics import verifier_agreement
from mmat.optimizers.targets import QueryFileVerifierTarget
from mmat.programs import CodeAgent, QueryFileVerifier
from mmat.store import open_store
from mmat.testing import DummyExhaustedError, DummyLM

from .conftest import World

STRICT = "Reject every task whose figures cannot be checked against a second source."
NOTE = "the rent figure cannot be checked against anything"


@pytest.fixture
def labelled(settings):
    """Five tasks with labels: three the scripted verifier agrees with, and a vague one it rejects too."""
    with open_store(settings) as store:
        w = World(store)
        ids = [w.task(f"k{i}", rent=900 + i) for i in range(4)] + [w.task("vague", vague=True, status="rejected")]
        for task_id in ids[:4]:
            w.label("task", task_id, "pass")
        w.label("task", ids[4], "reject", "too vague")
    return ids


@pytest.fixture
def proposer():
    """A prompt model for MIPROv2 and GEPA: answers any signature; its instruction is STRICT."""
    return DummyLM(lambda messages, fields: {f: "COMPLETE" if f == "observations" else STRICT for f in fields},
                   name="proposer")


def demos_in(path, predictor):
    return json.loads(path.read_text())[predictor]["demos"]


def test_bootstrap_compiles_saves_and_records(settings, scripted_models, labelled, tmp_path, capsys):
    out = tmp_path / "qfv.json"
    summary = run_optimize(settings, program="query_file_verifier", optimizer="bootstrap", out=out, progress=False)
    assert capsys.readouterr().out == ""  # print-free: the CLI prints the summary
    assert (summary.program, summary.optimizer, summary.n_train, summary.n_val) == ("query_file_verifier", "bootstrap", 3, 2)
    assert summary.metric_before == summary.metric_after == 1.0 and summary.out == out.resolve()
    # the compiled program gained demos (the uncompiled one has none), each a full verifier trace
    demos = demos_in(out, "verify")
    assert len(demos) == 3 and all({"query", "files", "reasons", "passed"} <= set(d) for d in demos)
    header, _ = read_header(out)
    assert (header.program, header.module, header.opt_run_id) == ("query_file_verifier", "query_file_verifier", summary.opt_run_id)
    with open_store(settings, read_only=True) as store:
        [row] = store.sql("select * from optimization_runs")
        [run] = store.sql("select kind, status, summary from runs where run_id = ?", [summary.opt_run_id])
        n_calls = store.sql("select count(*) n from lm_calls where run_id = ?", [summary.opt_run_id])[0]["n"]
    assert (row["opt_run_id"], row["program"], row["optimizer"], row["teacher"]) == (
        summary.opt_run_id, "query_file_verifier", "bootstrap", "dummy/verifier")
    assert (row["n_train"], row["n_val"], row["metric_before"], row["metric_after"]) == (3, 2, 1.0, 1.0)
    assert row["out_path"] == str(out.resolve())
    optimize = json.loads(row["settings"])["optimize"]
    assert len(optimize["train_ids"]) == 3 and not set(optimize["train_ids"]) & set(optimize["val_ids"])
    assert run["kind"] == "optimize" and run["status"] == "done" and json.loads(run["summary"])["n_val"] == 2
    assert n_calls >= 5  # two before, three bootstrapped, then after (cached calls are recorded too)


def test_progress_goes_to_stderr_and_stdout_stays_clean(settings, scripted_models, tmp_path, capsys):
    with open_store(settings) as store:
        w = World(store)
        task = w.task("k0")
        w.label("trajectory", w.trajectory(task, "950"), "correct")
        w.label("trajectory", w.trajectory(task, "no idea", attempt=1), "incorrect", "it guessed")
    summary = run_optimize(settings, program="trajectory_verifier", optimizer="bootstrap", out=tmp_path / "tv.json")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "trajectory_verifier: scoring before" in captured.err and "Bootstrapped" in captured.err
    assert (summary.n_train, summary.n_val, summary.metric_before) == (1, 1, 1.0)
    assert "metric 1.000 -> 1.000" in summary.render() and "mmat synth --program" in summary.render()


def test_reloaded_program_sends_the_same_prompts_and_gives_the_same_outputs(settings, scripted_models, labelled, tmp_path):
    with open_store(settings, read_only=True) as store:
        examples, _ = load_examples(store, "query_file_verifier", None, settings=settings)
    calls = scripted_models["verifier"].calls
    lm = build_lm("dummy/verifier", settings=settings, cache=False)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        student = QueryFileVerifierTarget(QueryFileVerifier())
        compiled = dspy.BootstrapFewShot(metric=verifier_agreement, metric_threshold=1.0, max_labeled_demos=0).compile(
            student, trainset=examples[:3])
        assert len(compiled.program.verify.demos) == 3 and student.program.verify.demos == []
        path = save_compiled(compiled.program, tmp_path / "c.json", CompiledHeader(
            mmat_version="0.1.0", program="query_file_verifier", module="query_file_verifier", module_class="QueryFileVerifier"))
        reloaded = QueryFileVerifierTarget(load_compiled(QueryFileVerifier(), path))
        for example in examples[3:]:
            start = len(calls)
            first = compiled(**example.inputs())
            second = reloaded(**example.inputs())
            assert first.result == second.result and first.error is second.error is None
            assert calls[start].messages == calls[start + 1].messages
            assert len(calls[start].messages) == 2 + 2 * 3  # system, three demo turns, the question


def test_gepa_rewrites_the_instruction_from_the_label_feedback(settings, labelled, proposer, tmp_path):
    """The person rejects every task; the verifier passes them until its instruction says otherwise."""
    with open_store(settings) as store:
        w = World(store)
        for task_id in labelled:
            w.label("task", task_id, "reject", NOTE)

    def verifier(messages, fields):
        strict = STRICT in messages[0]["content"]
        return {"reasons": ["cannot be checked" if strict else "the files fit"], "passed": not strict,
                "rewritten_query": None}

    DummyLM(verifier, name="gepa-verifier")
    settings = settings.model_copy(update={"verifier": "dummy/gepa-verifier"})
    out = tmp_path / "gepa.json"
    summary = run_optimize(settings, program="query_file_verifier", optimizer="gepa", out=out, progress=False,
                           trials=3, prompt_model="dummy/proposer")
    assert summary.metric_before == 0.0 and summary.metric_after == 1.0
    assert json.loads(out.read_text())["verify"]["signature"]["instructions"] == STRICT
    reflection = "\n".join(str(m["content"]) for call in proposer.calls for m in call.messages)
    assert f"a person labelled it reject ({NOTE})" in reflection  # the metric's feedback reached GEPA


def test_mipro_runs_on_a_tiny_budget(settings, scripted_models, labelled, proposer, tmp_path):
    out = tmp_path / "mipro.json"
    summary = run_optimize(settings, program="query_file_verifier", optimizer="mipro", out=out, progress=False,
                           trials=2, max_demos=2, prompt_model="dummy/proposer")
    assert summary.optimizer == "mipro" and summary.metric_after == 1.0 and read_header(out)[0].optimizer == "mipro"
    assert proposer.calls  # instructions were proposed by the prompt model
    assert len(demos_in(out, "verify")) <= 2


def test_bootstrap_the_agent_on_solved_tasks(settings, scripted_models, tmp_path):
    with open_store(settings) as store:
        w = World(store)
        for i in range(3):
            w.task(f"k{i}", rent=900 + i)
    out = tmp_path / "agent.json"
    summary = run_optimize(settings, program="agent", optimizer="bootstrap", out=out, progress=False)
    assert (summary.n_train, summary.n_val, summary.metric_before, summary.metric_after) == (2, 1, 1.0, 1.0)
    demos = demos_in(out, "step")
    assert len(demos) == 2 and all("code" in d and "thought" in d for d in demos)
    agent = load_compiled(CodeAgent([], settings=settings), out)
    assert len(agent.step.demos) == 2 and agent.fallback.demos == []
    assert not (settings.workspaces_dir / "optimize").exists() or not any((settings.workspaces_dir / "optimize").iterdir())


@pytest.mark.slow  # embeds with MiniLM (the diversity penalty)
def test_bootstrap_the_query_generator_with_the_verifier_as_judge(settings, scripted_models, tmp_path):
    with open_store(settings) as store:
        World(store).task("k0")
    out = tmp_path / "qg.json"
    summary = run_optimize(settings, program="query_generator", optimizer="bootstrap", out=out, progress=False)
    # the scripted teacher writes three specs per domain and the verifier rejects the vague one
    assert summary.val_from_train and summary.metric_before == pytest.approx(2 / 3)
    [demo] = demos_in(out, "generate")
    assert len(demo["queries"]) == 3


def test_a_failing_run_is_recorded_as_failed(settings, labelled, tmp_path):
    DummyLM([{"reasons": ["ok"], "passed": True, "rewritten_query": None}], name="short")
    settings = settings.model_copy(update={"verifier": "dummy/short"})
    with pytest.raises(DummyExhaustedError):
        run_optimize(settings, program="query_file_verifier", optimizer="bootstrap", out=tmp_path / "x.json", progress=False)
    with open_store(settings, read_only=True) as store:
        [run] = store.sql("select status, summary from runs where kind = 'optimize'")
        assert store.sql("select count(*) n from optimization_runs")[0]["n"] == 0
    assert run["status"] == "failed" and "ran out of scripted responses" in json.loads(run["summary"])["error"]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"program": "planner", "optimizer": "bootstrap"}, "unknown program 'planner'"),
    ({"program": "agent", "optimizer": "annealing"}, "unknown optimizer 'annealing'"),
    ({"program": "agent", "optimizer": "bootstrap", "out": "compiled.pkl"}, "ending in .json"),
    ({"program": "agent", "optimizer": "bootstrap", "trials": 0}, "--trials must be at least 1"),
    ({"program": "agent", "optimizer": "gepa", "auto": "extreme"}, "unknown budget 'extreme'"),
    ({"program": "trajectory_verifier", "optimizer": "bootstrap"}, r"no labelled trajectories: run `mmat label` first"),
])
def test_bad_requests_fail_before_any_run_is_recorded(settings, scripted_models, tmp_path, kwargs, message):
    kwargs = {"out": tmp_path / "c.json", **kwargs}
    kwargs["out"] = tmp_path / kwargs["out"]
    with pytest.raises(ConfigError, match=message):
        run_optimize(settings, progress=False, **kwargs)
    if settings.db_path.exists():
        with open_store(settings, read_only=True) as store:
            assert store.sql("select count(*) n from runs")[0]["n"] == 0


def test_an_unchanged_program_is_said_so_and_refused_with_require_change(settings, scripted_models, labelled, tmp_path):
    out = tmp_path / "same.json"
    summary = run_optimize(settings, program="query_file_verifier", optimizer="bootstrap", out=out, progress=False,
                           max_demos=0)
    assert summary.unchanged and "equals the input" in summary.render() and "use it:" not in summary.render()
    with pytest.raises(ConfigError, match="equals the input program .*nothing saved"):
        run_optimize(settings, program="query_file_verifier", optimizer="bootstrap", out=tmp_path / "no.json",
                     progress=False, max_demos=0, require_change=True)
    assert not (tmp_path / "no.json").exists()
    with open_store(settings, read_only=True) as store:
        runs = store.sql("select status, settings from runs where kind = 'optimize' order by started_at")
    assert [r["status"] for r in runs] == ["done", "failed"]
    compiled = json.loads(runs[0]["settings"])["compiled"]
    assert compiled == {"path": str(out.resolve()), "sha256": summary.sha256} and len(summary.sha256) == 64


def test_the_cli_records_the_command_as_typed(settings, scripted_models, labelled, tmp_path):
    """`mmat optimize` names its command from the argv the click group saw (CliRunner's, not pytest's)."""
    from click.testing import CliRunner

    from mmat.cli import cli

    args = ["optimize", "--program", "query_file_verifier", "--out", str(tmp_path / "q.json"), "--quiet"]
    result = CliRunner().invoke(cli, args, env={"MMAT_TEACHER": "dummy/teacher", "MMAT_VERIFIER": "dummy/verifier",
                                                "MMAT_CONTROLLER": "dummy/agent", "MMAT_HOME": str(settings.home),
                                                "MMAT_CONCURRENCY": "1", "MMAT_DEDUP_THRESHOLD": "0.95"})
    assert result.exit_code == 0, result.output
    with open_store(settings, read_only=True) as store:
        [run] = store.sql("select command, status from runs where kind = 'optimize'")
    assert run == {"command": "mmat " + " ".join(args), "status": "done"}
