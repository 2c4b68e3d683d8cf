"""LoRA SFT end to end on tiny students: overfit, save, reload, generate, resume, provenance."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmat.errors import ConfigError
from mmat.finetune import TrainConfig, generate_chat, load_student, train_sft
from mmat.finetune.config import LOSS_PLOT_FILE, TRAIN_META_FILE

# Fast, deterministic overfitting: constant lr, no dropout, one thread (see conftest).
FAST = {"lr": 1e-2, "lr_scheduler": "constant", "dropout": 0.0, "rank": 8, "alpha": 16, "batch_size": 2,
        "progress": False, "cpu_threads": 1, "save_steps": 1000}


@pytest.fixture
def two_tasks(image_files):
    """Two one-step conversations: one with an image in the task, one text-only."""
    with_image = [
        {"role": "user", "content": [{"type": "text", "text": "How many cats?"},
                                     {"type": "image_url", "image_url": {"url": image_files["path"]}}]},
        {"role": "assistant", "content": "final_answer('2')"},
    ]
    text_only = [{"role": "user", "content": "What is the capital of France?"},
                 {"role": "assistant", "content": "final_answer('Paris')"}]
    return [with_image, text_only]


def _reproduces(adapter_dir, conversations) -> None:
    model, processing = load_student(adapter_dir)
    for conv in conversations:
        reply = generate_chat(model, processing, conv[:-1], max_new_tokens=24)
        assert reply.text == conv[-1]["content"].strip()
        assert reply.finish_reason == "stop" and reply.prompt_tokens > 0


def test_text_student_overfits_saves_reloads_and_generates(text_lm, two_tasks, tmp_path):
    out = tmp_path / "adapter"
    meta = {"sql": "SELECT * FROM trajectories WHERE verdict = 'pass'", "n_rows": 2, "run_ids": ["run-a", "run-b"]}
    result = train_sft(two_tasks, TrainConfig(model=str(text_lm), out=out, max_steps=40, **FAST), selection_meta=meta)

    assert result.losses[-1] < 0.2 * result.losses[0]
    assert result.global_step == 40 and len(result.losses) == 40 and result.n_samples == 2
    assert not result.padding_free  # auto: no packing with CPU attention (length grouping is faster there)
    assert result.tokens_seen == 40 * result.selection.n_tokens  # every step sees both samples; pads not counted
    _reproduces(out, two_tasks)

    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(text_lm.resolve())
    record = json.loads((out / TRAIN_META_FILE).read_text())
    assert record["kind"] == "sft"
    assert record["selection"]["sql"] == meta["sql"] and record["selection"]["run_ids"] == ["run-a", "run-b"]
    assert record["selection"]["n_rows"] == 2 and record["data"]["n_samples"] == 2
    assert record["config"]["max_steps"] == 40 and record["config"]["lr"] == FAST["lr"]
    assert record["result"]["global_step"] == 40 and record["versions"]["peft"]
    assert (out / LOSS_PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.loss_plot == out / LOSS_PLOT_FILE


def test_idefics3_student_overfits_and_keeps_its_vision_tower(idefics3, two_tasks, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "adapter"
    result = train_sft(two_tasks, TrainConfig(model=str(idefics3), out=out, max_steps=30, **FAST))
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert not result.padding_free
    _reproduces(out, two_tasks)

    base = AutoModelForImageTextToText.from_pretrained(idefics3).state_dict()
    merged = load_student(out, merge=True)[0].state_dict()
    vision = [k for k in base if ".vision_model." in k]
    assert vision and all(torch.equal(base[k], merged[k]) for k in vision)
    changed = [k for k in base if ".text_model." in k and k.endswith("q_proj.weight") and not torch.equal(base[k], merged[k])]
    assert changed  # the language model did learn


def test_llava_student_trains(llava, two_tasks, tmp_path):
    result = train_sft(two_tasks, TrainConfig(model=str(llava), out=tmp_path / "a", max_steps=8, **FAST))
    assert result.losses[-1] < 0.5 * result.losses[0]


def test_resume_continues_from_the_newest_checkpoint(text_lm, two_tasks, tmp_path):
    """Also covers forced padding-free training (packed batches through the Trainer)."""
    out = tmp_path / "adapter"
    config = TrainConfig(model=str(text_lm), out=out, max_steps=4, padding_free=True,
                         **{**FAST, "save_steps": 2})
    first = train_sft(two_tasks, config)
    from safetensors.torch import load_file

    finished = load_file(out / "adapter_model.safetensors")
    # Simulate a crash after step 2: the last checkpoint and the final adapter never got written.
    shutil.rmtree(out / "checkpoint-4")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (out / name).unlink()

    assert first.padding_free
    resumed = train_sft(two_tasks, config.model_copy(update={"resume": True}))
    assert resumed.resumed_from == str(out / "checkpoint-2")
    assert resumed.global_step == 4
    assert resumed.steps == [1, 2, 3, 4]  # the history before the crash comes back from the checkpoint
    assert resumed.losses == pytest.approx(first.losses, rel=1e-4)
    again = load_file(out / "adapter_model.safetensors")
    assert all(torch.allclose(finished[k], again[k], atol=1e-6) for k in finished)


def test_refuses_to_train_over_an_existing_run(text_lm, two_tasks, tmp_path):
    out = tmp_path / "adapter"
    train_sft(two_tasks, TrainConfig(model=str(text_lm), out=out, max_steps=1, **FAST))
    with pytest.raises(ConfigError, match=r"already holds a training run: pass --resume \(resume=True in Python\)"):
        train_sft(two_tasks, TrainConfig(model=str(text_lm), out=out, max_steps=1, **FAST))


def test_nothing_left_to_train_names_the_reasons(text_lm, two_tasks, tmp_path):
    with pytest.raises(ConfigError, match=r"no training samples left \(0/2 samples kept, 2 dropped \(too_long=2\)"):
        train_sft(two_tasks, TrainConfig(model=str(text_lm), out=tmp_path / "a", max_length=8, **FAST))


def test_padding_free_is_refused_for_vlms(idefics3, two_tasks, tmp_path):
    with pytest.raises(ConfigError, match="padding_free=True works for text students only"):
        train_sft(two_tasks, TrainConfig(model=str(idefics3), out=tmp_path / "a", max_steps=1, padding_free=True, **FAST))


def test_every_config_field_has_help_text():
    from mmat.finetune.config import DPOTrainConfig, TrainResult

    for model in (TrainConfig, DPOTrainConfig, TrainResult):
        missing = [name for name, f in model.model_fields.items() if not f.description]
        assert not missing, f"{model.__name__}: {missing}"
