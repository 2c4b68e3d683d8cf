"""Loading bases offline and placing LoRA on the language model only."""

from __future__ import annotations

import json

import pytest

from mmat.errors import ConfigError, MmatError, ModelUnavailableError
from mmat.finetune.models import (VISION_MODULE_TAGS, apply_lora, check_vision_frozen, load_base, lora_config,
                                  resolve_model)


def _lora(path, **kw):
    model, processing, kind = load_base(str(path))
    return apply_lora(model, kind, lora_config(kind, rank=4, alpha=8, dropout=0.0, **kw)), kind


@pytest.mark.parametrize("name,text_tag", [("idefics3", "text_model"), ("llava", "language_model")])
def test_vlm_lora_sits_on_the_language_model_only(request, name, text_tag):
    model, kind = _lora(request.getfixturevalue(name))
    assert kind == "vlm"
    lora_modules = {n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters() if ".lora_" in n}
    assert lora_modules, "LoRA must adapt something"
    assert all(text_tag in m for m in lora_modules)
    # every q/k/v/o/gate/up/down projection of the language model is adapted (2 layers x 7)
    assert len(lora_modules) == 2 * 7
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    vision = [(n, p) for n, p in model.named_parameters() if any(t in n.split(".") for t in VISION_MODULE_TAGS)]
    assert vision and not any(p.requires_grad for _, p in vision)
    assert not any("lora_" in n for n, _ in vision)


def test_text_lm_lora_covers_all_linear_projections_but_the_head(text_lm):
    model, kind = _lora(text_lm)
    assert kind == "text"
    lora_modules = {n.rsplit(".lora_", 1)[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_" in n}
    assert lora_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lm_head" in n and p.requires_grad for n, p in model.named_parameters())


def test_a_target_regex_that_reaches_the_vision_tower_is_refused(idefics3):
    with pytest.raises(MmatError, match="LoRA reached the vision tower"):
        _lora(idefics3, target_modules=r".*\.q_proj")


def test_check_vision_frozen_catches_an_unfrozen_tower(llava):
    model, _, _ = load_base(str(llava))
    with pytest.raises(MmatError, match="vision tower"):
        check_vision_frozen(model)  # a bare model: every parameter still trainable


def test_qwen2_vl_on_cpu_gives_a_clear_error(tmp_path):
    qwen = tmp_path / "qwen2vl"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "vision_config": {"depth": 1}}))
    with pytest.raises(ConfigError, match="need torchvision.*CUDA machine.*Idefics3"):
        load_base(str(qwen))


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(ModelUnavailableError, match="local model directory"):
        load_base(str(tmp_path / "nope"))


def test_resolve_model_makes_dirs_absolute(text_lm, monkeypatch):
    monkeypatch.chdir(text_lm.parent)
    assert resolve_model("text") == str(text_lm.resolve())
    assert resolve_model("org/some-hub-id") == "org/some-hub-id"
