"""Embedding and image-pool figures: model load, embedding throughput, default pool build, pool search,
and the near-duplicate filter, on this machine's CPU. Prints a table and appends it to bench/RESULTS.md.

    python bench/embed_pool.py [--texts 512] [--threads N]

On a shared, oversubscribed CPU torch's default intra-op threads spin against other processes;
``--threads 1`` shows the difference (it sets torch.set_num_threads in this process only).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _texts(n: int) -> list[str]:
    from mmat.programs.seeds import load_seed_examples

    seeds = [e.query for e in load_seed_examples()]
    return [f"{seeds[i % len(seeds)]} (variant {i})" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="texts to embed for the throughput figure")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from mmat.embed import Embedder, near_duplicate_mask
    from mmat.pool import ImagePool

    rows: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    embedder = Embedder()
    embedder.embed(["warm up"])
    rows.append(("load model (hash check + transformers import + weights)", f"{time.perf_counter() - t0:.2f} s"))

    texts = _texts(args.texts)
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    dt = time.perf_counter() - t0
    rows.append((f"embed {len(texts)} queries (batch 64)", f"{dt:.2f} s = {len(texts) / dt:.0f} texts/s"))

    t0 = time.perf_counter()
    pool = ImagePool.build_default(embedder=embedder)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool.rows()
    rows.append((f"build default pool ({len(pool)} images, PNG)", f"{build:.2f} s"))
    rows.append(("embed the pool's captions", f"{time.perf_counter() - t0:.2f} s"))

    latencies = []
    for text in texts[:100]:
        t0 = time.perf_counter()
        pool.search(text, k=3)
        latencies.append((time.perf_counter() - t0) * 1000)
    rows.append(("pool search, k=3 (query embedding included)", f"p50 {statistics.median(latencies):.1f} ms, "
                 f"max {max(latencies):.1f} ms"))

    t0 = time.perf_counter()
    flags = near_duplicate_mask(vectors, vectors[: len(vectors) // 2], 0.92)
    rows.append((f"near-duplicate mask, {len(vectors)} new vs {len(vectors) // 2} stored",
                 f"{(time.perf_counter() - t0) * 1000:.1f} ms ({sum(flags)} flagged)"))

    load = os.getloadavg()[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = ["| measurement | result |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    print("\n".join(table))
    section = [
        f"\n## Embeddings and image pool ({stamp})\n",
        f"`python bench/embed_pool.py --texts {args.texts} --threads {args.threads}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load avg {load:.1f}, torch threads "
        f"{torch.get_num_threads()}. all-MiniLM-L6-v2 via plain transformers, fp32.\n",
        *table,
        "",
    ]
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("\n".join(section))


if __name__ == "__main__":
    main()
