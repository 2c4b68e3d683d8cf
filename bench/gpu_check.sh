#!/usr/bin/env bash
# One short GPU check on a lent device machine (see bench/gpu_check.py): single-GPU LoRA SFT throughput,
# peak memory and MFU on SmolVLM-2.2B shapes, then DDP scaling when more than one GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: the GPU check did not run')"
python3 bench/gpu_check.py "$@"
n=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$n" -gt 1 ]; then
  python3 -m torch.distributed.run --standalone --nproc_per_node="$n" bench/gpu_check.py "$@"
fi
