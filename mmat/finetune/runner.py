"""Plumbing shared by SFT and DPO: the out dir, checkpoints, progress, the loss plot, the provenance file.

A run's out dir is self-describing: adapter weights + ``adapter_config.json`` (PEFT), the processor
or tokenizer (chat template included), ``mmat_train.json`` (config, data selection, what was kept,
results, library versions) and ``loss.png``. ``checkpoint-N/`` folders make it resumable.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
import re
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.finetune.config import LOSS_PLOT_FILE, TRAIN_META_FILE, BaseTrainConfig, TrainResult
from mmat.finetune.data import SelectionMeta, SelectionReport
from mmat.finetune.distributed import check_backend_options, is_main_process

__all__ = [
    "log",
    "newest_checkpoint",
    "prepare_out",
    "training_arguments",
    "progress_callback",
    "losses_from_history",
    "plot_losses",
    "write_train_meta",
    "as_selection_meta",
    "cpu_threads",
    "finish",
    "fit",
    "conclude",
]

log = logging.getLogger("mmat.finetune")
_CKPT = re.compile(r"^checkpoint-(\d+)$")


@contextmanager
def cpu_threads(n: int | None):
    """Run with ``n`` torch intra-op threads, restoring the previous count after (None: leave as is)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def newest_checkpoint(out: Path) -> Path | None:
    """The ``checkpoint-N`` folder with the largest N in ``out`` (None if there is none)."""
    if not out.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def prepare_out(out: Path, resume: bool) -> Path | None:
    """Create ``out``; return the checkpoint to resume from, refusing to mix two runs silently."""
    out = Path(out)
    ckpt = newest_checkpoint(out)
    if resume:
        if ckpt is None:
            log.warning("--resume given but %s holds no checkpoint-N: starting from scratch", out)
        out.mkdir(parents=True, exist_ok=True)
        return ckpt
    if ckpt is not None or (out / "adapter_config.json").exists():
        raise ConfigError(f"{out} already holds a training run: pass --resume (resume=True in Python) to continue it, or choose a new "
                          "out directory.")
    out.mkdir(parents=True, exist_ok=True)
    return None


def training_arguments(config: BaseTrainConfig, args_cls=None, **extra: Any):
    """transformers/TRL TrainingArguments from our config (no reporting integrations, our own progress bar)."""
    import torch
    from transformers import TrainingArguments

    check_backend_options(fsdp=config.fsdp, deepspeed=str(config.deepspeed) if config.deepspeed else None)
    args_cls = args_cls or TrainingArguments
    return args_cls(
        output_dir=str(config.out),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        activation_checkpointing=config.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # LoRA trains only language-model projections, all used in every forward pass: skip DDP's extra
        # autograd traversal that looks for unused parameters.
        ddp_find_unused_parameters=False,
        fsdp=config.fsdp or "",
        deepspeed=str(config.deepspeed) if config.deepspeed else None,
        **extra,
    )


def progress_callback(enabled: bool):
    """A tqdm bar over optimizer steps showing the last loss (replaces the Trainer's dict printing)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            if enabled:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="finetune", unit="step",
                                file=sys.stderr, dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return _Progress()


def losses_from_history(history: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    rows = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h and "step" in h]
    return [s for s, _ in rows], [v for _, v in rows]


def plot_losses(steps: list[int], losses: list[float], path: Path, title: str) -> Path | None:
    """Write the loss curve (matplotlib, no display); None when there is nothing to plot."""
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker="o" if len(losses) < 40 else None, linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("mmat", "torch", "transformers", "peft", "trl", "accelerate"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def as_selection_meta(meta: SelectionMeta | dict[str, Any] | None) -> SelectionMeta:
    if meta is None:
        return SelectionMeta()
    if isinstance(meta, SelectionMeta):
        return meta
    return SelectionMeta.model_validate(meta)


def write_train_meta(config: BaseTrainConfig, selection_meta: SelectionMeta, report: SelectionReport,
                     result: TrainResult, **extra: Any) -> Path:
    """``mmat_train.json``: everything needed to know (and redo) how this adapter was made."""
    record = {
        "kind": result.kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        "selection": selection_meta.model_dump(mode="json"),
        "data": report.model_dump(mode="json"),
        "result": result.model_dump(mode="json", exclude={"history", "selection"}),
        "versions": _versions(),
        **extra,
    }
    path = Path(config.out) / TRAIN_META_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    return path


def fit(trainer, config: BaseTrainConfig, resume_from: Path | None, save_adapter, processing
        ) -> tuple[Any, list[dict[str, Any]]]:
    """The training loop both trainers share: our progress bar, CPU threads, resume, and a rank-0-only save.

    ``save_adapter(out)`` writes the adapter weights; the processor is saved next to them. Under a
    multi-process launch only rank 0 writes (the Trainer already writes checkpoints on rank 0 only).
    Returns the Trainer's train output and its log history.
    """
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback(config.progress and trainer.is_world_process_zero()))
    with cpu_threads(config.cpu_threads):
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if trainer.is_world_process_zero():
        save_adapter(config.out)
        processing.save_pretrained(config.out)
    return output, list(trainer.state.log_history)


def conclude(config: BaseTrainConfig, result: TrainResult, selection_meta: SelectionMeta, report: SelectionReport,
             **extra: Any) -> TrainResult:
    """Loss plot, summary and ``mmat_train.json`` — written by rank 0 only."""
    if is_main_process():
        finish(config, result)
        write_train_meta(config, selection_meta, report, result, **extra)
    return result


def finish(config: BaseTrainConfig, result: TrainResult) -> TrainResult:
    """Loss plot + one-line summary (stderr, when progress is on)."""
    result.loss_plot = plot_losses(result.steps, result.losses, Path(config.out) / LOSS_PLOT_FILE,
                                   f"{result.kind.upper()} loss — {Path(config.model).name}")
    if config.progress:
        print(result.summary(), file=sys.stderr)
    log.info(result.summary())
    return result
