"""Step-level DPO with LoRA (TRL ``DPOTrainer``), optionally continuing from an SFT adapter.

A step pair is a shared prompt — system + task (with its images) + the earlier *chosen* steps and
their observations — and two candidate next assistant steps, one preferred. The reference policy
is the starting point: the base model with the adapter disabled when starting fresh, or a frozen
copy of the SFT adapter (TRL adds it as a second adapter, ``ref``) when ``init_adapter`` is given,
so DPO measures movement away from the SFT student, not from the untuned base.

Length is filtered here, not truncated by TRL: a pair whose prompt + longer completion exceeds
``max_length`` is dropped and counted, so no completion is ever cut silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.finetune.config import DPOTrainConfig, TrainResult
from mmat.finetune.data import ChatCodec, SelectionMeta, SelectionReport, _Drop, pair_to_row
from mmat.finetune.models import check_vision_frozen, load_base, lora_config, resolve_model
from mmat.finetune.distributed import sum_over_ranks, world_size
from mmat.finetune.runner import as_selection_meta, conclude, fit, losses_from_history, prepare_out, training_arguments

__all__ = ["train_dpo", "build_dpo_rows"]


def _pair_length(codec: ChatCodec, row: dict[str, Any], side: str) -> int:
    messages = row["prompt"] + row[side]
    sample, _ = codec.encode({"messages": messages, "images": row.get("images", [])}, max_length=1 << 30)
    return len(sample)


def build_dpo_rows(pairs: Iterable[Any], codec: ChatCodec, *, max_length: int, captions: Mapping[str, str] | None = None,
                   base_dir: Path | None = None) -> tuple[list[dict[str, Any]], SelectionReport]:
    """Preference pairs -> TRL DPO rows that fit ``max_length``, and the report of what was dropped."""
    rows, reasons, n_rows, tokens = [], Counter(), 0, 0
    for pair in pairs:
        n_rows += 1
        try:
            row = pair_to_row(pair, vlm=codec.is_vlm, captions=captions, base_dir=base_dir)
            longest = max(_pair_length(codec, row, "chosen"), _pair_length(codec, row, "rejected"))
        except _Drop as e:
            reasons[e.reason] += 1
            continue
        if longest > max_length:
            reasons["too_long"] += 1
            continue
        rows.append(row)
        tokens += longest
    report = SelectionReport(n_rows=n_rows, n_samples=len(rows), n_dropped=n_rows - len(rows), reasons=dict(reasons),
                             n_tokens=tokens)
    return rows, report


def _dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(rows)


def train_dpo(pairs: Iterable[Any], config: DPOTrainConfig | dict[str, Any], *,
              selection_meta: SelectionMeta | dict[str, Any] | None = None,
              captions: Mapping[str, str] | None = None, base_dir: Path | None = None) -> TrainResult:
    """Train a LoRA adapter with DPO on step pairs ``{"prompt": messages, "chosen", "rejected"}``.

    ``chosen``/``rejected`` are assistant step texts (or ``[{"role": "assistant", ...}]``). Objects
    with those attributes (the store's ``PreferenceRow``) work too. Returns a ``TrainResult`` whose
    ``history`` holds TRL's reward metrics (``rewards/margins``, ``rewards/accuracies``, ...).
    """
    from peft import PeftModel
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    config = config if isinstance(config, DPOTrainConfig) else DPOTrainConfig.model_validate(config)
    meta = as_selection_meta(selection_meta)
    resume_from = prepare_out(config.out, config.resume)

    base_path = resolve_model(config.model)
    model, processing, kind = load_base(base_path, bf16=config.bf16, attn_implementation=config.attn_implementation)
    codec = ChatCodec(processing)
    rows, report = build_dpo_rows(pairs, codec, max_length=config.max_length, captions=captions, base_dir=base_dir)
    if not rows:
        raise ConfigError(f"no preference pairs left ({report.summary()}): select more pairs or raise max_length.")

    set_seed(config.seed)
    peft_config = None
    if config.init_adapter is not None:
        # Trainable copy of the SFT adapter; TRL freezes another copy ("ref") as the reference policy.
        model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
    else:
        peft_config = lora_config(kind, rank=config.rank, alpha=config.alpha, dropout=config.dropout,
                                  target_modules=config.target_modules)
    args = training_arguments(config, args_cls=DPOConfig, beta=config.beta, loss_type=[config.loss_type],
                              max_length=None)  # lengths were filtered above: TRL must not truncate
    trainer = DPOTrainer(model=model, args=args, train_dataset=_dataset(rows), processing_class=processing,
                         peft_config=peft_config)
    check_vision_frozen(trainer.model)
    output, history = fit(trainer, config, resume_from,
                          lambda out: trainer.model.save_pretrained(out, selected_adapters=["default"]), processing)
    steps, losses = losses_from_history(history)
    runtime = float(output.metrics.get("train_runtime", 0.0))
    tokens = sum_over_ranks(int(getattr(trainer, "_total_train_tokens", 0) or 0))
    result = TrainResult(
        kind="dpo", adapter_dir=Path(config.out), base_model=base_path, n_samples=len(rows), selection=report,
        steps=steps, losses=losses, history=history, global_step=trainer.state.global_step,
        train_runtime_s=runtime, tokens_seen=tokens, tokens_per_s=tokens / runtime if runtime > 0 and tokens else 0.0,
        resumed_from=str(resume_from) if resume_from else None,
    )
    return conclude(config, result, meta, report, model_kind=kind, world_size=world_size(),
                    reference="init_adapter" if config.init_adapter else "base (adapter disabled)")
