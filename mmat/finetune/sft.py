"""LoRA supervised finetuning of a local student on agent conversations (assistant turns only).

Reading order: ``train_sft`` top to bottom is the whole recipe — load the base, encode the
conversations (mask + max length, data.py), put LoRA on the language model (models.py), batch with
length grouping and, for text LMs, padding-free packing (collate.py), train with the transformers
``Trainer``, save the adapter and its provenance (runner.py).

Why the plain ``Trainer`` and not TRL's ``SFTTrainer``: SFTTrainer tokenizes on its own and, for VLMs,
re-processes raw messages in its collator; it refuses padding-free and packing with images and masks
assistant tokens only through ``{% generation %}`` templates it ships for some models. We need our
own encoding (the tested assistant mask that works for any prefix-stable template, and counted
truncation) and our own collator (length-grouped; padding-free where exact and worth it), so
SFTTrainer would only add a second tokenization path. ``bench/sft_throughput.py`` compares the two on the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.finetune.collate import LengthBucketSampler, SFTCollator, packing_is_exact
from mmat.finetune.config import TrainConfig, TrainResult
from mmat.finetune.data import ChatCodec, EncodedSample, SelectionMeta, SelectionReport, encode_rows
from mmat.finetune.models import apply_lora, load_base, lora_config, resolve_model
from mmat.finetune.distributed import sum_over_ranks, world_size
from mmat.finetune.runner import as_selection_meta, conclude, fit, log, losses_from_history, prepare_out, training_arguments

__all__ = ["train_sft"]


def _trainer_class():
    from transformers import Trainer

    class _SFTTrainer(Trainer):
        """Trainer + length-bucketed batches + a count of the real tokens it trained on."""

        def __init__(self, *args, lengths: list[int] | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.lengths = lengths
            self.tokens_seen = 0

        def _get_train_sampler(self, train_dataset=None):
            if self.lengths is None:
                return super()._get_train_sampler(train_dataset)
            # Bucket by the *global* batch: under DDP accelerate deals consecutive per-device chunks of this
            # order to ranks 0..N-1, so one optimizer step sees the same samples as a single process would.
            global_batch = self.args.train_batch_size * self.args.world_size
            return LengthBucketSampler(self.lengths, global_batch, seed=self.args.seed)

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs.get("attention_mask")
            self.tokens_seen += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, num_items_in_batch)

    return _SFTTrainer


def _encode(data: Iterable[Any], codec: ChatCodec, config: TrainConfig, captions, base_dir
            ) -> tuple[list[EncodedSample], SelectionReport]:
    data = list(data)
    if data and all(isinstance(x, EncodedSample) for x in data):
        too_long = [s for s in data if len(s) > config.max_length]
        kept = [s for s in data if len(s) <= config.max_length]
        report = SelectionReport(n_rows=len(data), n_samples=len(kept), n_dropped=len(too_long),
                                 reasons={"too_long": len(too_long)} if too_long else {},
                                 n_tokens=sum(len(s) for s in kept), n_supervised_tokens=sum(s.n_supervised for s in kept))
        return kept, report
    return encode_rows(data, codec, max_length=config.max_length, overflow=config.overflow,
                       captions=captions, base_dir=base_dir)


_VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def _padding_free(config: TrainConfig, kind: str, model, codec: ChatCodec) -> bool:
    """Pack text batches only where it pays and is exact.

    Packing removes pad tokens from the linear layers, but with SDPA/eager attention (CPU) the packed
    row attends over its full length under a block-diagonal mask, so attention costs grow with the
    square of the *batch* length. Measured on CPU (bench/sft_throughput.py, Llama 256x4, batch 4):
    length-bucketed padded batches ran ~1.45x faster than packed ones (1976 vs 1353 tokens/s). So "auto" packs only with a
    varlen attention kernel (FlashAttention on CUDA); elsewhere length grouping keeps padding small.
    """
    import torch

    if config.padding_free is False:
        return False
    if kind == "vlm":
        if config.padding_free:
            raise ConfigError("padding_free=True works for text students only: images need per-sample tensors. "
                              "Leave padding_free unset for VLMs.")
        return False
    if config.padding_free is None and model.config._attn_implementation not in _VARLEN_ATTENTION:
        return False
    if torch.cuda.is_available():
        model.to("cuda")  # varlen kernels run on the GPU only; the Trainer keeps the model there
    exact = packing_is_exact(model, codec)
    if config.padding_free and not exact:
        raise ConfigError(f"{config.model}: packed sequences do not give the same logits as separate ones with this "
                          "model's attention; set padding_free=None (auto) or False.")
    if not exact:
        log.info("padding-free packing is not exact for %s: padding batches instead", config.model)
    return exact


def train_sft(samples_or_conversations: Iterable[Any], config: TrainConfig | dict[str, Any], *,
              selection_meta: SelectionMeta | dict[str, Any] | None = None,
              captions: Mapping[str, str] | None = None, base_dir: Path | None = None) -> TrainResult:
    """Train a LoRA adapter on conversations (OpenAI chat format), TRL rows or encoded samples.

    ``selection_meta`` (the SQL, row count and run ids that chose the data) is saved with the
    adapter. ``captions`` (image URL -> caption) enrich the text that stands in for images when
    the student is text-only; ``base_dir`` resolves relative image paths. Returns a ``TrainResult``;
    the adapter is in ``config.out``.
    """
    import torch
    from transformers import set_seed

    config = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    meta = as_selection_meta(selection_meta)
    resume_from = prepare_out(config.out, config.resume)

    base_path = resolve_model(config.model)
    model, processing, kind = load_base(base_path, bf16=config.bf16, attn_implementation=config.attn_implementation)
    codec = ChatCodec(processing)
    samples, report = _encode(samples_or_conversations, codec, config, captions, base_dir)
    if not samples:
        raise ConfigError(f"no training samples left ({report.summary()}): select more rows or raise max_length.")

    set_seed(config.seed)  # LoRA init draws from the global RNG
    model = apply_lora(model, kind, lora_config(kind, rank=config.rank, alpha=config.alpha,
                                                dropout=config.dropout, target_modules=config.target_modules))
    if config.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need inputs that require grad under PEFT
    padding_free = _padding_free(config, kind, model, codec)

    trainer = _trainer_class()(
        model=model,
        args=training_arguments(config, remove_unused_columns=False),
        train_dataset=samples,
        data_collator=SFTCollator(codec, padding_free=padding_free),
        lengths=[len(s) for s in samples] if config.group_by_length else None,
    )
    output, history = fit(trainer, config, resume_from, model.save_pretrained, processing)
    steps, losses = losses_from_history(history)
    runtime = float(output.metrics.get("train_runtime", 0.0))
    tokens_seen = sum_over_ranks(trainer.tokens_seen)
    result = TrainResult(
        kind="sft", adapter_dir=Path(config.out), base_model=base_path, n_samples=len(samples), selection=report,
        steps=steps, losses=losses, history=history, global_step=trainer.state.global_step,
        train_runtime_s=runtime, tokens_seen=tokens_seen,
        tokens_per_s=tokens_seen / runtime if runtime > 0 else 0.0,
        resumed_from=str(resume_from) if resume_from else None, padding_free=padding_free,
    )
    return conclude(config, result, meta, report, lora_targets=str(model.peft_config["default"].target_modules),
                    model_kind=kind, device="cuda" if torch.cuda.is_available() else "cpu", world_size=world_size())
