"""Step-DPO with LoRA: the reward margin rises, the reference is the starting policy, lengths are filtered."""

from __future__ import annotations

import json

import pytest

from mmat.errors import ConfigError
from mmat.finetune import DPOTrainConfig, TrainConfig, load_student, train_dpo, train_sft
from mmat.finetune.data import ChatCodec
from mmat.finetune.dpo import build_dpo_rows

FAST = {"lr": 5e-3, "lr_scheduler": "constant", "dropout": 0.0, "rank": 8, "alpha": 16, "batch_size": 2,
        "progress": False, "cpu_threads": 1, "save_steps": 1000}


@pytest.fixture
def step_pairs(agent_conversation):
    """Two step pairs: the agent's second step (prompt = task + first step + observation) and a text task."""
    return [
        {"prompt": agent_conversation[:4], "chosen": agent_conversation[4]["content"],
         "rejected": "Thought: I give up.\nCode:\n```py\nprint(undefined_name)\n```"},
        {"prompt": [{"role": "user", "content": "What is 2+2?"}],
         "chosen": [{"role": "assistant", "content": "final_answer('4')"}],
         "rejected": [{"role": "assistant", "content": "final_answer('5')"}]},
    ]


def _margins(result) -> list[float]:
    return [h["rewards/margins"] for h in result.history if "rewards/margins" in h]


def test_dpo_raises_the_chosen_vs_rejected_margin(text_lm, step_pairs, tmp_path):
    out = tmp_path / "dpo"
    result = train_dpo(step_pairs, DPOTrainConfig(model=str(text_lm), out=out, max_steps=6, **FAST),
                       selection_meta={"sql": "SELECT * FROM preference_pairs", "n_rows": 2})
    margins = _margins(result)
    assert len(margins) == 6
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # fresh LoRA: policy == reference at step 1
    assert margins[-1] > margins[0] + 0.5 and margins == sorted(margins)
    assert result.losses[-1] < result.losses[0]
    # only the trained adapter is saved (TRL keeps no second copy for a fresh LoRA)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()
    record = json.loads((out / "mmat_train.json").read_text())
    assert record["kind"] == "dpo" and record["reference"] == "base (adapter disabled)"
    assert record["selection"]["sql"] == "SELECT * FROM preference_pairs" and record["data"]["n_samples"] == 2
    model, _ = load_student(out)
    assert type(model).__name__.startswith("Peft")


def test_dpo_from_an_sft_adapter_uses_it_as_the_reference(text_lm, two_sft_conversations, step_pairs, tmp_path):
    sft = train_sft(two_sft_conversations, TrainConfig(model=str(text_lm), out=tmp_path / "sft", max_steps=5,
                                                       **{**FAST, "lr": 1e-2}))
    out = tmp_path / "dpo"
    result = train_dpo(step_pairs, DPOTrainConfig(model=str(text_lm), out=out, max_steps=4,
                                                  init_adapter=sft.adapter_dir, **FAST))
    margins = _margins(result)
    # Step 1: policy (SFT copy) == reference (SFT copy), so the margin is exactly 0. Were the reference
    # the untuned base, the SFT adapter's own preference would show up as a non-zero margin here.
    assert margins[0] == pytest.approx(0.0, abs=1e-6)
    assert margins[-1] > 0.2
    assert not (out / "ref").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(text_lm.resolve())


def test_dpo_on_a_vlm_with_images(idefics3, step_pairs, tmp_path):
    result = train_dpo(step_pairs, DPOTrainConfig(model=str(idefics3), out=tmp_path / "dpo", max_steps=4, **FAST))
    margins = _margins(result)
    assert margins[-1] > margins[0]


def test_pairs_too_long_or_identical_are_dropped_and_counted(text_lm, step_pairs):
    from transformers import AutoTokenizer

    codec = ChatCodec(AutoTokenizer.from_pretrained(text_lm))
    same = {"prompt": [{"role": "user", "content": "hi"}], "chosen": "hello", "rejected": " hello "}
    short = build_dpo_rows(step_pairs[1:], codec, max_length=4096)[1].n_tokens  # prompt + longer completion
    rows, report = build_dpo_rows([*step_pairs, same], codec, max_length=short)
    assert report.n_rows == 3 and report.reasons == {"too_long": 1, "chosen_equals_rejected": 1}
    assert len(rows) == 1 and rows[0]["chosen"] == [{"role": "assistant", "content": "final_answer('4')"}]


def test_no_pairs_left_is_a_config_error(text_lm, step_pairs, tmp_path):
    with pytest.raises(ConfigError, match="no preference pairs left"):
        train_dpo(step_pairs, DPOTrainConfig(model=str(text_lm), out=tmp_path / "d", max_length=10, **FAST))


@pytest.fixture
def two_sft_conversations():
    return [
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "final_answer('4')"}],
        [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "final_answer('Paris')"}],
    ]
