"""`mmat finetune sft` on a synthesized store, then the tuned student drives the agent as local/<adapter>."""

import json

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.testing.tiny_models import build_tiny_idefics3, build_tiny_text_lm
from mmat.pipeline.synth import SynthRequest, run_synth

from .conftest import TOOLS


@pytest.fixture
def store_with_trajectories(synth_settings, scripted_models):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    return synth_settings


def test_sft_on_a_text_student_then_serve_it(store_with_trajectories, tmp_path):
    base = build_tiny_text_lm(tmp_path / "base")
    out = tmp_path / "adapter"
    result = CliRunner().invoke(cli, ["finetune", "sft", "--model", str(base), "--out", str(out), "--max-steps", "6",
                                      "--lr", "0.01", "--max-length", "4096", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    [summary] = [l[l.index("sft: "):] for l in result.output.splitlines() if "sft: " in l]
    assert summary.startswith("sft: 2 samples, 6 steps")
    assert f"serve it: mmat eval --controller local/{out} ...  (or mmat synth --controller ...)" in result.output
    assert "Loading weights" not in result.output
    first, last = (float(x) for x in summary.split("loss ")[1].split(",")[0].split(" -> "))
    assert last < first
    meta = json.loads((out / "mmat_train.json").read_text())
    from mmat.pipeline.training_data import TRAINING_SELECTION

    assert meta["selection"]["sql"] == TRAINING_SELECTION and meta["selection"]["n_rows"] == 2
    assert (out / "adapter_config.json").is_file() and (out / "loss.png").is_file()

    from mmat.store import open_store

    with open_store(store_with_trajectories, read_only=True) as store:
        [run] = store.sql("select status, command, summary from runs where kind = 'finetune'")
    assert run["status"] == "done" and run["command"].startswith("mmat finetune sft --model")
    assert json.loads(run["summary"])["global_step"] == 6
    listed = json.loads(CliRunner().invoke(cli, ["runs", "--json"]).output)
    assert [r["status"] for r in listed if r["kind"] == "finetune"] == ["done"]

    # the student is a model string like any other: one agent step through the local provider
    import dspy

    from mmat.lm import adapter_for, build_lm
    from mmat.signatures.agent import CodeAgentStep

    student = f"local/{out}"
    with dspy.context(lm=build_lm(student, settings=store_with_trajectories, max_tokens=64), adapter=adapter_for(student)):
        step = dspy.Predict(CodeAgentStep)(history=dspy.History(messages=[]), task="What was March's rent?",
                                            files="march.csv", tools="inspect_file_as_text(file_path)", observation=None)
    assert isinstance(step.code, str) and isinstance(step.thought, str)


def test_sft_on_a_vlm_student_keeps_image_placeholders(store_with_trajectories, tmp_path):
    base = build_tiny_idefics3(tmp_path / "vlm")
    out = tmp_path / "vlm_adapter"
    result = CliRunner().invoke(cli, ["finetune", "sft", "--model", str(base), "--out", str(out), "--max-steps", "2",
                                      "--max-length", "8192", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert "sft: 2 samples, 2 steps" in result.output


def test_sft_with_nothing_selected_says_how_to_fix(store_with_trajectories, tmp_path):
    result = CliRunner().invoke(cli, ["finetune", "sft", "--model", str(tmp_path), "--out", str(tmp_path / "a"),
                                      "--where", "FALSE"])
    assert result.exit_code == 1
    assert "no trajectories match 'FALSE': run `mmat synth` first, or widen --where." in result.output
    from mmat.store import open_store

    with open_store(store_with_trajectories, read_only=True) as store:
        [run] = store.sql("select status, summary from runs where kind = 'finetune'")
    assert run["status"] == "failed" and "no trajectories match 'FALSE'" in json.loads(run["summary"])["error"]


@pytest.mark.slow
def test_sft_with_two_processes_launches_torchrun_and_rank0_reports(store_with_trajectories, tmp_path):
    base = build_tiny_text_lm(tmp_path / "base")
    out = tmp_path / "ddp_adapter"
    result = CliRunner().invoke(cli, ["finetune", "sft", "--model", str(base), "--out", str(out), "--max-steps", "2",
                                      "--max-length", "4096", "--batch-size", "1", "--num-processes", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "mmat_train.json").read_text())
    assert meta["world_size"] == 2 and meta["result"]["global_step"] == 2
    assert meta["selection"]["n_rows"] == 2  # both ranks read the same selection from the store


def test_a_failing_distributed_run_is_one_error(store_with_trajectories, tmp_path):
    result = CliRunner().invoke(cli, ["finetune", "sft", "--model", str(tmp_path / "missing"), "--out",
                                      str(tmp_path / "a"), "--num-processes", "2"])
    assert result.exit_code == 1
    assert "distributed training with 2 processes failed (exit 1)" in result.output
    assert "names the rank that failed" in result.output
