"""GPU check: LoRA SFT throughput on a real VLM architecture with random weights (no hub download).

Runs where a CUDA GPU is (the lent device machine: torch, transformers and peft are there, mmat's other
dependencies are not, so this script imports none of mmat). It builds an Idefics3 model with SmolVLM-2.2B's
shapes (Llama-2B text model + SigLIP-400M vision tower) from a config, puts LoRA on the language model's
projections exactly as mmat does (the vision tower stays frozen), and trains on random image+text batches
in bf16. Reported: tokens/s, peak GPU memory, and MFU = achieved FLOP/s over the GPU's bf16 dense peak,
with FLOPs per token ~ 4 x parameters (forward 2N, backward to the activations 2N; LoRA's own weight
gradients are negligible). With more than one GPU, the same run under torchrun gives DDP scaling.

    bash bench/gpu_check.sh                  # on the device machine
    python bench/gpu_check.py --shape tiny   # anywhere, a smoke run of the same code on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

# bf16 dense peak per GPU, TFLOP/s (vendor figures); unknown GPUs need --peak-tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
SHAPES = {
    # SmolVLM-Instruct (2.2B): text Llama 2048 x 24, vision SigLIP 1152 x 27 at 384 px / patch 14
    "smolvlm-2b": {"text": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                                num_key_value_heads=32),
                   "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                  image_size=384, patch_size=14), "scale_factor": 3, "vocab": 49280},
    "tiny": {"text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4),
             "vision": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            image_size=32, patch_size=8), "scale_factor": 2, "vocab": 512},
}
LORA_TARGETS = r".*(language_model|text_model).*\.(q|k|v|o|gate|up|down)_proj"


def build(shape: dict, device: str, dtype):
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    image_token_id = shape["vocab"] - 1
    cfg = Idefics3Config(text_config=dict(model_type="llama", vocab_size=shape["vocab"], max_position_embeddings=8192,
                                          **shape["text"]),
                         vision_config=shape["vision"], scale_factor=shape["scale_factor"], image_token_id=image_token_id)
    with torch.device(device):
        model = Idefics3ForConditionalGeneration(cfg).to(dtype)
    v = shape["vision"]
    tokens_per_image = (v["image_size"] // v["patch_size"]) ** 2 // shape["scale_factor"] ** 2
    return model, image_token_id, tokens_per_image


def batch(shape, image_token_id, tokens_per_image, batch_size, seq_len, device, dtype):
    import torch

    ids = torch.randint(0, shape["vocab"] - 2, (batch_size, seq_len), device=device)
    ids[:, 1:1 + tokens_per_image] = image_token_id  # one image per sample, near the start like a task image
    size = shape["vision"]["image_size"]
    pixels = torch.randn(batch_size, 1, 3, size, size, device=device, dtype=dtype)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels, "labels": ids.clone()}


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smolvlm-2b")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    if not cuda and args.shape != "tiny":
        print("no CUDA GPU here: the GPU check did not run (python bench/gpu_check.py --shape tiny: a CPU smoke run)")
        return
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if cuda else torch.float32
    shape = SHAPES[args.shape]
    torch.manual_seed(0)
    model, image_token_id, per_image = build(shape, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any("vision" in n for n in trainable), "LoRA must stay off the vision tower"
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = batch(shape, image_token_id, per_image, args.batch_size, args.seq_len, device, dtype)

    def step():
        opt.zero_grad(set_to_none=True)
        model(**data).loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_s = args.steps * args.batch_size * args.seq_len * world / seconds
    if rank != 0:
        return
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    mfu = (4 * n_params * tokens_per_s / 1e12) / (peak * world) if peak else None
    row = {"shape": args.shape, "params_M": round(n_params / 1e6, 1), "device": name, "gpus": world,
           "batch": args.batch_size, "seq_len": args.seq_len, "tokens_per_s": round(tokens_per_s),
           "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
           "mfu": round(mfu, 3) if mfu is not None else None}
    print(json.dumps(row))
    if cuda and args.shape != "tiny":
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with args.results.open("a") as f:
            f.write(f"\n### GPU check ({stamp})\n`bench/gpu_check.py`: {json.dumps(row)}\n")


if __name__ == "__main__":
    main()
