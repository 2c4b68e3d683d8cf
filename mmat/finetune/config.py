"""Typed training configs and results. Every field has help text; the config is saved next to the adapter.

``TrainConfig`` drives LoRA SFT, ``DPOTrainConfig`` step-DPO; both share ``BaseTrainConfig``. A
``TrainResult`` is what a run returns (and what ``mmat_train.json`` records, with the config, the
data selection and the library versions that produced the adapter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmat.finetune.data import Overflow, SelectionReport

__all__ = ["BaseTrainConfig", "TrainConfig", "DPOTrainConfig", "TrainResult", "TRAIN_META_FILE", "LOSS_PLOT_FILE"]

TRAIN_META_FILE = "mmat_train.json"
LOSS_PLOT_FILE = "loss.png"


class BaseTrainConfig(BaseModel):
    """Knobs shared by SFT and DPO."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    model: str = Field(description="Base model: a local Hugging Face model directory (or a hub id already in the "
                                   "local HF cache; mmat never downloads while training).")
    out: Path = Field(description="Adapter directory to write: adapter weights, processor, mmat_train.json, "
                                  "loss.png and checkpoint-N/ folders.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training samples (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 means run the full epochs.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate of the LoRA weights (AdamW).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup.")
    warmup: float = Field(0.0, ge=0, description="Warmup: a fraction of all steps if < 1, else a number of steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the LoRA weights.")
    rank: int = Field(16, ge=1, description="LoRA rank r (size of the low-rank update).")
    alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | None = Field(
        None, description="Regex of module names that get LoRA (full match). Default: the language model's "
                          "q/k/v/o/gate/up/down projections for VLMs, all linear layers for text LMs.")
    max_length: int = Field(2048, ge=8, description="Longest training sequence in tokens (image tokens included). "
                                                    "Longer samples lose whole trailing turns or are dropped.")
    batch_size: int = Field(2, ge=1, description="Samples per forward pass (per device).")
    grad_accum: int = Field(1, ge=1, description="Forward passes accumulated per optimizer step.")
    seed: int = Field(0, description="Seed for LoRA init, data order and dropout.")
    bf16: bool = Field(False, description="bfloat16 autocast (CPU and recent GPUs); weights stay fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, ~30% slower.")
    resume: bool = Field(False, description="Continue from the newest checkpoint-N in out (fresh start if none).")
    save_steps: int = Field(50, ge=1, description="Write a resumable checkpoint every this many optimizer steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept in out; older ones are deleted.")
    logging_steps: int = Field(1, ge=1, description="Record the loss every this many optimizer steps (loss.png, losses).")
    progress: bool = Field(True, description="Show a progress bar and print a one-line summary at the end.")
    attn_implementation: str | None = Field(
        None, description="Attention kernel to load the model with, e.g. flash_attention_2 on CUDA (then text batches "
                          "are packed padding-free); None: transformers' default (sdpa).")
    cpu_threads: int | None = Field(None, ge=1, description="torch CPU threads while training (None: torch's default). "
                                                         "1 is fastest for tiny models and on a busy machine.")
    fsdp: str | None = Field(None, description="FSDP mode for multi-process training, as transformers spells it (e.g. "
                                                "'full_shard auto_wrap'); None: plain DDP when several processes run.")
    deepspeed: Path | None = Field(None, description="DeepSpeed ZeRO JSON config (needs the deepspeed package); None: "
                                                     "no DeepSpeed.")


class TrainConfig(BaseTrainConfig):
    """LoRA supervised finetuning on the assistant turns of agent conversations."""

    overflow: Overflow = Field("drop_turns", description="A sample longer than max_length: drop_turns keeps it up to the "
                                                         "last assistant turn that fits; drop_sample drops it.")
    group_by_length: bool = Field(True, description="Batch samples of similar length together (less padding).")
    padding_free: bool | None = Field(
        None, description="Pack each batch into one row without padding (text LMs). None (auto): on with a varlen "
                          "attention kernel (FlashAttention, CUDA) when a startup check shows packed logits equal "
                          "unpacked ones; off on CPU, where length-grouped padding is faster. True: required.")


class DPOTrainConfig(BaseTrainConfig):
    """Step-level DPO with LoRA; the reference is the starting policy (base, or the SFT adapter)."""

    lr: float = Field(5e-5, gt=0, description="Peak learning rate of the LoRA weights (AdamW); DPO wants less than SFT.")
    beta: float = Field(0.1, gt=0, description="DPO beta: how far the policy may move from the reference.")
    loss_type: str = Field("sigmoid", description="TRL DPO loss: sigmoid (DPO), ipo, hinge, robust, ...")
    init_adapter: Path | None = Field(None, description="SFT adapter to start from; it is also the reference policy. "
                                                        "None starts from the base model with a fresh LoRA.")


class TrainResult(BaseModel):
    """What a training run produced."""

    model_config = ConfigDict(protected_namespaces=())

    kind: Literal["sft", "dpo"] = Field(description="Which trainer ran.")
    adapter_dir: Path = Field(description="Directory holding the adapter (load with mmat.finetune.load_student).")
    base_model: str = Field(description="Base model the adapter applies to (adapter_config base_model_name_or_path).")
    n_samples: int = Field(description="Training samples (or pairs) used.")
    selection: SelectionReport = Field(description="What happened to the rows handed in.")
    steps: list[int] = Field(default_factory=list, description="Optimizer step of each recorded loss.")
    losses: list[float] = Field(default_factory=list, description="Training loss at each recorded step.")
    history: list[dict[str, Any]] = Field(default_factory=list,
                                          description="Every logged metric dict (TRL/Trainer log_history).")
    global_step: int = Field(0, description="Optimizer steps taken in total (including before a resume).")
    train_runtime_s: float = Field(0.0, description="Wall time of the training loop in this process.")
    tokens_seen: int = Field(0, description="Real (non-padding) tokens through forward passes in this process.")
    tokens_per_s: float = Field(0.0, description="tokens_seen / train_runtime_s.")
    resumed_from: str | None = Field(None, description="Checkpoint the run continued from, if any.")
    padding_free: bool = Field(False, description="Whether batches were packed without padding.")
    loss_plot: Path | None = Field(None, description="loss.png next to the adapter.")

    def summary(self) -> str:
        last = f"{self.losses[-1]:.4f}" if self.losses else "n/a"
        first = f"{self.losses[0]:.4f}" if self.losses else "n/a"
        return (f"{self.kind}: {self.n_samples} samples, {self.global_step} steps, loss {first} -> {last}, "
                f"{self.tokens_per_s:.0f} tok/s, adapter {self.adapter_dir}")
