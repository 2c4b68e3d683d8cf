"""Local thread executor vs the Ray executor for `mmat synth`, on the loopback fake OpenAI server.

Same scripted world and latency as bench/synth_throughput.py; each executor runs the same seeds into a
fresh home. Reported per executor: wall time, tasks/s, and for Ray the start-up (ray.init + workers
building their programs happen inside the Ray run: a run starts its own actors) and the overhead per
task against local.

Only 127.0.0.1 is contacted (a local Ray instance on loopback). Usage:
    python bench/ray_executor.py [--latency 0.2] [--seeds 6] [--concurrency 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import date
from http.server import ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a local Ray instance on loopback only

sys.path.insert(0, str(Path(__file__).parent))
from synth_throughput import make_handler  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def run(executor: str, seeds: int, concurrency: int, workers: int, api_base: str) -> dict:
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth

    home = Path(tempfile.mkdtemp(prefix=f"mmat-bench-{executor}-"))
    settings = load_settings(home=home, teacher="openai/teacher", verifier="openai/verifier", controller="openai/agent",
                             api_base=api_base, concurrency=concurrency, dedup_threshold=0.99)
    request = SynthRequest(tasks=seeds, tools=["inspect_file_as_text", "visualizer"], trajectories_per_task=1,
                           executor=executor, workers=workers if executor == "ray" else None)
    t0 = time.monotonic()
    summary = run_synth(settings, request, progress=False)
    wall = time.monotonic() - t0
    tasks = summary.counts.get("generated", 0) + summary.counts.get("rejected", 0)
    return {"executor": executor, "tasks": tasks, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    counter = {"calls": 0, "lock": threading.Lock()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.latency, counter))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    os.environ["OPENAI_API_KEY"] = "bench-placeholder-not-a-key"

    import ray

    run("local", 1, 1, 1, api_base)  # warm-up: imports, embedder, pool, first sandbox
    local = run("local", args.seeds, args.concurrency, args.workers, api_base)
    t0 = time.monotonic()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    init = time.monotonic() - t0
    steady = run("ray", args.seeds, args.concurrency, args.workers, api_base)  # includes the workers' start
    ray.shutdown()
    server.shutdown()

    overhead = (steady["wall"] - local["wall"]) / max(1, steady["tasks"])
    line = (f"local: {local['tasks']} tasks in {local['wall']:.1f} s ({local['tasks'] / local['wall']:.2f} tasks/s); "
            f"ray: init {init:.1f} s, then {steady['tasks']} tasks in {steady['wall']:.1f} s incl. worker start ({steady['tasks'] / steady['wall']:.2f} tasks/s); overhead {overhead:+.2f} s/task "
            f"(ratio ray/local tasks/s {(steady['tasks'] / steady['wall']) / (local['tasks'] / local['wall']):.2f})")
    print(line)
    load = os.getloadavg()[0]
    with RESULTS.open("a") as f:
        f.write(f"\n## ray executor — {date.today()} (latency {args.latency * 1000:.0f} ms, {args.seeds} seeds, "
                f"concurrency {args.concurrency}, {args.workers} Ray workers, load {load:.1f}, "
                f"`python bench/ray_executor.py`)\n\n{line}\n")


if __name__ == "__main__":
    main()
