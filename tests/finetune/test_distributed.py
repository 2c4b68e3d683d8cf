"""Multi-process training (DDP over gloo on CPU): same loss curve as one process, resume, rank-0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmat.errors import ConfigError
from mmat.finetune.distributed import check_backend_options, launch_argv

# 16 one-turn conversations of several lengths; the script prints rank 0's loss curve as JSON.
_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from mmat.finetune import TrainConfig, train_sft
    model, out, batch, max_steps, resume = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    convs = [[{"role": "user", "content": f"Question {i}: " + "word " * (i % 5 + 1)},
              {"role": "assistant", "content": f"final_answer('{i * 7}')"}] for i in range(16)]
    config = TrainConfig(model=model, out=out, max_steps=max_steps, lr=1e-2, lr_scheduler="constant", dropout=0.0,
                         rank=8, alpha=16, batch_size=batch, progress=False, cpu_threads=1, save_steps=3, resume=resume)
    result = train_sft(convs, config)
    print("RESULT", os.environ.get("RANK", "0"), json.dumps({"losses": result.losses, "step": result.global_step,
                                                             "resumed": result.resumed_from}), flush=True)
''')


def _train(script: Path, model: Path, out: Path, *, batch: int, steps: int, procs: int = 1, resume: bool = False):
    args = [str(script), str(model), str(out), str(batch), str(steps), "1" if resume else "0"]
    cmd = [sys.executable, *args] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {int(line.split()[1]): json.loads(line.split(" ", 2)[2]) for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")}
    assert sorted(results) == list(range(procs))
    return results[0]


def test_launch_argv_reruns_the_command_under_torchrun_without_the_flag():
    argv = ["finetune", "sft", "--model", "m", "--num-processes", "2", "--out", "o", "--num-processes=2"]
    cmd = launch_argv(2, argv)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:] == ["-m", "mmat.cli", "finetune", "sft", "--model", "m", "--out", "o"]
    with pytest.raises(ConfigError, match="at least 2"):
        launch_argv(1, argv)


def test_backend_options_are_checked_before_training(tmp_path):
    with pytest.raises(ConfigError, match="one of fsdp and deepspeed"):
        check_backend_options(fsdp="full_shard", deepspeed=str(tmp_path / "ds.json"))
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match="deepspeed is not installed"):
            check_backend_options(fsdp=None, deepspeed=str(tmp_path / "ds.json"))


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch_and_resume(text_lm, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    single = _train(script, text_lm, tmp_path / "single", batch=4, steps=6)

    # 2 ranks x 2 samples = the same global batch of 4; stopped after 3 steps, then resumed to 6
    first = _train(script, text_lm, tmp_path / "ddp", batch=2, steps=3, procs=2)
    assert first["step"] == 3 and (tmp_path / "ddp" / "checkpoint-3").is_dir()
    resumed = _train(script, text_lm, tmp_path / "ddp", batch=2, steps=6, procs=2, resume=True)
    assert resumed["resumed"].endswith("checkpoint-3") and resumed["step"] == 6

    assert len(single["losses"]) == 6 and single["losses"][-1] < single["losses"][0]
    assert resumed["losses"] == pytest.approx(single["losses"], rel=1e-4)
    assert first["losses"] == pytest.approx(single["losses"][:3], rel=1e-4)

    meta = json.loads((tmp_path / "ddp" / "mmat_train.json").read_text())
    assert meta["world_size"] == 2 and meta["result"]["global_step"] == 6
    # rank 0 alone wrote the out dir: one adapter, one provenance file, checkpoints from rank 0's saves
    names = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert "adapter_model.safetensors" in names and names.count("mmat_train.json") == 1
    assert not any(n.endswith(".tmp") for n in names)
