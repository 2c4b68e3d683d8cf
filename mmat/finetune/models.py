"""Load a base student (VLM or text LM) offline and put LoRA on its language model only.

Why LoRA is placed by regex: vision encoders have ``q_proj``/``k_proj`` too, and PEFT's name
matching would adapt them. The vision tower must stay frozen (it sees few, repetitive images in
agent traces and overfits fast), so for VLMs we target the *language model's* projections by a
per-architecture regex (Idefics3 calls it ``text_model``; LLaVA and Qwen ``language_model``) and then
check that no vision parameter is trainable.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from mmat.errors import ConfigError, MmatError, ModelUnavailableError

__all__ = [
    "VLM_LORA_TARGETS",
    "TEXT_LORA_TARGETS",
    "VISION_MODULE_TAGS",
    "TORCHVISION_MODEL_TYPES",
    "ModelKind",
    "model_kind",
    "load_base",
    "lora_config",
    "apply_lora",
    "check_vision_frozen",
    "resolve_model",
    "base_model_of",
]

ModelKind = Literal["vlm", "text"]

VLM_LORA_TARGETS = r".*(language_model|text_model).*\.(q|k|v|o|gate|up|down)_proj"
TEXT_LORA_TARGETS = "all-linear"  # PEFT: every nn.Linear except the output head
VISION_MODULE_TAGS = ("vision_model", "vision_tower", "visual", "vision_encoder", "image_encoder")
# Processors of these families need torchvision (video processors), which has no CPU wheel on the index.
TORCHVISION_MODEL_TYPES = frozenset(
    {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "smolvlm", "glm4v", "glm4v_moe", "internvl"})


def _config_json(path: str) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(
            f"cannot load model config for {path!r} ({str(e).splitlines()[0]}): pass a local model directory with "
            "config.json and weights, or a hub id already in the local HF cache (mmat never downloads while training)."
        ) from None


def resolve_model(model: str) -> str:
    """A loadable base for ``model``: an absolute model dir, ``local/NAME`` -> its weights dir, or a hub id.

    Absolute paths end up in ``adapter_config.json`` (base_model_name_or_path), so the adapter can be
    served later from any working directory.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if model.startswith("local/"):
        from mmat.local import local_weights_dir

        return str(Path(local_weights_dir(model)).resolve())
    return model


def model_kind(path: str) -> ModelKind:
    """``vlm`` when the config has a vision tower, else ``text``."""
    cfg = _config_json(path)
    return "vlm" if cfg.get("vision_config") else "text"


def _require_vlm_support(path: str, model_type: str) -> None:
    if model_type not in TORCHVISION_MODEL_TYPES:
        return
    import torch

    if importlib.util.find_spec("torchvision") is None or not torch.cuda.is_available():
        raise ConfigError(
            f"{model_type} models ({path}) need torchvision for their image/video processor, and torchvision has no "
            "CPU build on the package index: train this model on a CUDA machine with torch+torchvision installed, or "
            "use an Idefics3 (SmolVLM-1) or LLaVA model on CPU."
        )


def _dtype(bf16: bool):
    import torch

    # On GPU with bf16 we load bf16 weights (memory); on CPU weights stay fp32 and bf16 is autocast only.
    if bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_base(path: str, *, bf16: bool = False, attn_implementation: str | None = None) -> tuple[Any, Any, ModelKind]:
    """(model, processor_or_tokenizer, kind) for a local model dir; VLMs via AutoModelForImageTextToText."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    cfg = _config_json(path)
    kind: ModelKind = "vlm" if cfg.get("vision_config") else "text"
    opts: dict[str, Any] = {"dtype": _dtype(bf16)}
    if attn_implementation:
        opts["attn_implementation"] = attn_implementation
    try:
        if kind == "vlm":
            _require_vlm_support(path, cfg.get("model_type", ""))
            processing = AutoProcessor.from_pretrained(path)
            model = AutoModelForImageTextToText.from_pretrained(path, **opts)
        else:
            processing = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **opts)
    except ImportError as e:
        if "torchvision" in str(e):
            raise ConfigError(f"{path}: its processor needs torchvision, which has no CPU build on the index; train "
                              "it on a CUDA machine with torch+torchvision, or use an Idefics3 or LLaVA model.") from None
        raise
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(f"cannot load {kind} model {path!r} ({str(e).splitlines()[0]}): check the model "
                                    "directory (weights, tokenizer/processor files).") from None
    return model, processing, kind


def lora_config(kind: ModelKind, *, rank: int, alpha: int, dropout: float, target_modules: str | None = None):
    from peft import LoraConfig

    targets = target_modules or (VLM_LORA_TARGETS if kind == "vlm" else TEXT_LORA_TARGETS)
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")


def apply_lora(model, kind: ModelKind, config) -> Any:
    """Wrap ``model`` in a PEFT LoRA model and prove the vision tower stayed frozen."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"LoRA found no target modules ({str(e).splitlines()[0]}): set target_modules to a regex "
                          "matching this architecture's language-model projections.") from None
    check_vision_frozen(peft_model)
    return peft_model


def check_vision_frozen(model) -> None:
    """Raise if any vision-tower parameter is trainable or carries a LoRA module."""
    bad = [n for n, p in model.named_parameters()
           if any(tag in n.split(".") for tag in VISION_MODULE_TAGS) and (p.requires_grad or "lora_" in n)]
    if bad:
        raise MmatError(f"LoRA reached the vision tower ({bad[0]} and {len(bad) - 1} more): restrict target_modules "
                        "to the language model, e.g. " + VLM_LORA_TARGETS)


def base_model_of(adapter_dir: Path) -> str:
    """``base_model_name_or_path`` from an adapter's ``adapter_config.json``."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        base = json.loads(path.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailableError(f"{adapter_dir} is not a LoRA adapter directory ({e}): pass the out dir of "
                                    "a finished mmat finetune run.") from None
    return base
