"""Multi-process training: which rank this is, and how `--num-processes N` launches itself.

mmat trains with the transformers ``Trainer`` (SFT) and TRL's ``DPOTrainer`` (DPO), which already run
under ``torchrun`` / ``accelerate launch``: DDP wraps the model, accelerate shards each dataloader, the
gloo backend is used on CPU and NCCL on GPUs, FSDP and DeepSpeed come from ``TrainingArguments``.
What mmat adds is small and lives here: the rank checks that keep every file write (adapter, provenance,
loss plot, checkpoints) on rank 0, and the launcher behind ``mmat finetune ... --num-processes N``,
which re-runs the same command under ``python -m torch.distributed.run --standalone``.

Data sharding: ``LengthBucketSampler`` cuts buckets of the *global* batch (per-device batch x world
size) and accelerate deals consecutive per-device chunks to ranks 0..N-1, so each optimizer step
trains on the same samples a single process with the global batch would (tests/finetune/test_distributed.py
compares the loss curves).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

from mmat.errors import ConfigError

__all__ = ["rank", "world_size", "is_main_process", "sum_over_ranks", "launch_argv", "check_backend_options",
           "NUM_PROCESSES_FLAG"]

NUM_PROCESSES_FLAG = "--num-processes"


def rank() -> int:
    """Global rank of this process (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of training processes (1 outside a distributed launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def sum_over_ranks(value: int) -> int:
    """``value`` summed over every rank (e.g. tokens seen); the value itself in a single process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def launch_argv(num_processes: int, argv: Sequence[str]) -> list[str]:
    """The command that re-runs ``mmat <argv>`` under torchrun with ``num_processes`` local workers.

    ``argv`` is the original command line after ``mmat``; the ``--num-processes`` option is removed
    from it so the workers train instead of launching again.
    """
    if num_processes < 2:
        raise ConfigError(f"{NUM_PROCESSES_FLAG} must be at least 2 to launch distributed training (got {num_processes}).")
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == NUM_PROCESSES_FLAG:
            skip = True
            continue
        if arg.startswith(NUM_PROCESSES_FLAG + "="):
            continue
        rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
            "-m", "mmat.cli", *rest]


def check_backend_options(*, fsdp: str | None, deepspeed: str | None) -> None:
    """Refuse FSDP/DeepSpeed settings this machine cannot run, with the fix."""
    if fsdp and deepspeed:
        raise ConfigError("choose one of fsdp and deepspeed, not both.")
    if deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("deepspeed is not installed: `pip install deepspeed` (CUDA machines), or train with DDP "
                              "(the default under --num-processes) or fsdp.")
        if not os.path.isfile(deepspeed):
            raise ConfigError(f"deepspeed config {deepspeed!r} is not a file: pass a ZeRO JSON config.")
