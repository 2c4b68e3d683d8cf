"""`mmat finetune sft|dpo`: select rows, rebuild the agent's conversations, train a LoRA adapter.

The student will be served as ``local/<adapter dir>``, so its training conversations are rendered
with that model string's adapter (JSON for local models) and its modality (images as parts for a
VLM, as text for a text LM): it trains on exactly the prompt it will see at inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmat.config import Settings
from mmat.errors import ConfigError

__all__ = ["resolve_base_model", "run_sft", "run_dpo", "launch_distributed"]


def launch_distributed(num_processes: int, argv: list[str]) -> None:
    """Run ``mmat <argv>`` as ``num_processes`` DDP workers (torchrun, standalone rendezvous on this host).

    The workers inherit the environment (MMAT_HOME, offline flags). A worker that dies makes torchrun
    stop the others and print which rank failed and why; that becomes one error here.
    """
    import subprocess

    from mmat.finetune.distributed import launch_argv

    rc = subprocess.run(launch_argv(num_processes, argv), check=False).returncode
    if rc != 0:
        raise ConfigError(f"distributed training with {num_processes} processes failed (exit {rc}): torchrun's report "
                          "above names the rank that failed and its error; fix it and rerun with --resume to continue "
                          "from the last checkpoint.")


def resolve_base_model(model: str, settings: Settings) -> tuple[str, bool]:
    """A base model reference -> (local directory or hub id, is_vlm). ``smollm2-135m`` / ``local/..`` are embedded."""
    from mmat.local.loader import local_weights_dir
    from mmat.local.registry import LOCAL_MODELS

    name = model.removeprefix("local/")
    if name in LOCAL_MODELS:
        path = local_weights_dir(name, settings)
    elif Path(model).expanduser().is_dir():
        path = Path(model).expanduser().resolve()
    else:
        return model, False  # a hub id already in the local HF cache; the trainer fails clearly if it is not
    import json

    config = path / "config.json"
    is_vlm = config.is_file() and "vision_config" in json.loads(config.read_text())
    return str(path), is_vlm


def _run_row(settings: Settings, kind: str, command: str):
    """The ``runs`` row of a training run (rank 0 only; the store is opened only to write it, not held)."""
    from contextlib import nullcontext

    from mmat.finetune.distributed import is_main_process
    from mmat.store import open_store
    from mmat.store import RunHandle, run_lifecycle

    if not is_main_process():
        return nullcontext(RunHandle(run_id="(rank 0 records this run)"))
    return run_lifecycle(lambda: open_store(settings), kind, settings, command)


def _result_summary(result) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude={"history"}) | {"summary": result.summary()}


def _selection_meta(selection, extra: dict[str, Any]):
    from mmat.finetune import SelectionMeta

    return SelectionMeta(sql=selection.where, n_rows=selection.n_rows, run_ids=selection.run_ids, extra=extra)


def run_sft(settings: Settings, *, model: str, out: Path, where: str | None = None, command: str = "mmat finetune sft",
            **train: Any):
    """LoRA SFT on the selected trajectories, recorded as a ``finetune`` run; returns the TrainResult."""
    with _run_row(settings, "finetune", command) as run:
        result = _sft(settings, model=model, out=out, where=where, **train)
        run.summary = _result_summary(result)
    return result


def _sft(settings: Settings, *, model: str, out: Path, where: str | None = None, **train: Any):
    from mmat.finetune import TrainConfig, train_sft
    from mmat.lm import configure_litellm
    from mmat.pipeline.training_data import DEFAULT_SFT_WHERE, load_conversations
    from mmat.store import open_store

    configure_litellm(settings)
    base, is_vlm = resolve_base_model(model, settings)
    student = f"local/{Path(out).resolve()}"
    with open_store(settings, read_only=True) as store:
        conversations, selection = load_conversations(store, where or DEFAULT_SFT_WHERE, model=student, multimodal=is_vlm)
    if not conversations:
        raise ConfigError(f"no trajectories match '{selection.where}': run `mmat synth` first, or widen --where.")
    config = TrainConfig(model=base, out=Path(out), **{k: v for k, v in train.items() if v is not None})
    meta = _selection_meta(selection, {"student_model_string": student, "mmat_settings": settings.to_record()})
    return train_sft([c.messages for c in conversations], config, selection_meta=meta)


def run_dpo(settings: Settings, *, model: str, out: Path, where: str | None = None, init_adapter: Path | None = None,
            command: str = "mmat finetune dpo", **train: Any):
    """Step-DPO with LoRA on the selected preference pairs (optionally from an SFT adapter), recorded as a run."""
    with _run_row(settings, "finetune", command) as run:
        result = _dpo(settings, model=model, out=out, where=where, init_adapter=init_adapter, **train)
        run.summary = _result_summary(result)
    return result


def _dpo(settings: Settings, *, model: str, out: Path, where: str | None = None, init_adapter: Path | None = None,
         **train: Any):
    from mmat.finetune import DPOTrainConfig, train_dpo
    from mmat.lm import configure_litellm
    from mmat.pipeline.training_data import load_preference_rows
    from mmat.store import open_store

    configure_litellm(settings)
    base, is_vlm = resolve_base_model(model, settings)
    student = f"local/{Path(out).resolve()}"
    with open_store(settings, read_only=True) as store:
        pairs, selection = load_preference_rows(store, where or "TRUE", model=student, multimodal=is_vlm)
    if not pairs:
        raise ConfigError(f"no preference pairs match '{selection.where}': run `mmat prefs` first, or widen --where.")
    config = DPOTrainConfig(model=base, out=Path(out), init_adapter=init_adapter,
                            **{k: v for k, v in train.items() if v is not None})
    meta = _selection_meta(selection, {"student_model_string": student, "mmat_settings": settings.to_record()})
    return train_dpo(pairs, config, selection_meta=meta)
