"""Synth throughput against a loopback OpenAI-compatible server with a fixed latency.

The server answers every chat completion from mmat's scripted synthesis world (valid outputs for each
signature) after sleeping ``--latency`` seconds, so the pipeline is LM-bound by construction. For
each concurrency we report tasks/s and the ratio to the LM-bound limit:

    limit = concurrency / (LM calls per task x latency)

The rest of a task's time is local work (sandbox starts, file generation, embeddings); on a 2-core
machine that CPU work, not the LM, caps throughput at high concurrency, so the CPU seconds per task and
the CPU-bound ceiling (cores / CPU seconds per task) are printed too.

Only 127.0.0.1 is contacted. Usage: python bench/synth_throughput.py [--latency 0.1] [--seeds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmat.testing import scripted  # noqa: E402
from mmat.testing.dummy import format_chat, format_json, output_fields  # noqa: E402

ROLES = {"teacher": scripted.teacher, "verifier": scripted.verifier, "agent": scripted.agent}
RESULTS = Path(__file__).with_name("RESULTS.md")


def make_handler(latency: float, counter: dict):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # the preflight's model listing (GET /v1/models)
            data = json.dumps({"object": "list", "data": [{"id": role, "object": "model"} for role in ROLES]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            role = body["model"].split("/")[-1]
            messages = body["messages"]
            fields = output_fields(messages, body.get("response_format"))
            outputs = ROLES[role](messages, fields)
            text = format_json(outputs) if body.get("response_format") else format_chat(outputs)
            time.sleep(latency)
            with counter["lock"]:
                counter["calls"] += 1
            reply = {
                "id": "bench", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def run_once(concurrency: int, seeds: int, api_base: str, counter: dict) -> dict:
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth

    home = Path(tempfile.mkdtemp(prefix=f"mmat-bench-c{concurrency}-"))  # fresh home: no DSPy cache hits
    settings = load_settings(home=home, teacher="openai/teacher", verifier="openai/verifier", controller="openai/agent",
                             api_base=api_base, concurrency=concurrency, dedup_threshold=0.99)
    counter["calls"] = 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
    cpu0 += resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    t0 = time.monotonic()
    summary = run_synth(settings, SynthRequest(tasks=seeds, tools=["inspect_file_as_text", "visualizer"],
                                               trajectories_per_task=1), progress=False)
    wall = time.monotonic() - t0
    ru_self, ru_kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime - cpu0
    tasks = summary.counts.get("generated", 0) + summary.counts.get("rejected", 0)
    return {"concurrency": concurrency, "tasks": tasks, "calls": counter["calls"], "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fake server waits per call")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per level, at least the level (3 tasks each)")
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels")
    args = parser.parse_args()

    counter = {"calls": 0, "lock": threading.Lock()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.latency, counter))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    os.environ["OPENAI_API_KEY"] = "bench-placeholder-not-a-key"  # litellm wants one; the loopback server ignores it

    cores = os.cpu_count() or 1
    rows = []
    run_once(1, 1, api_base, counter)  # warm-up: imports, embedder, pool, first sandbox
    for level in [int(x) for x in args.levels.split(",")]:
        r = run_once(level, max(args.seeds, level), api_base, counter)  # a seed's calls are sequential: need >= level seeds
        calls_per_task = r["calls"] / r["tasks"]
        tps = r["tasks"] / r["wall"]
        lm_limit = level / (calls_per_task * args.latency)
        cpu_per_task = r["cpu"] / r["tasks"]
        cpu_limit = cores / cpu_per_task
        rows.append((level, r["tasks"], r["calls"], calls_per_task, r["wall"], tps, lm_limit, tps / lm_limit,
                     cpu_per_task, cpu_limit, tps / min(lm_limit, cpu_limit)))
        print(f"concurrency {level:>3}: {tps:6.2f} tasks/s, LM-bound limit {lm_limit:7.2f} (ratio {tps / lm_limit:.2f}), "
              f"CPU {cpu_per_task:.2f} s/task -> CPU-bound limit {cpu_limit:.2f} (ratio to the tighter limit "
              f"{tps / min(lm_limit, cpu_limit):.2f})", flush=True)
    server.shutdown()

    lines = [f"\n## synth throughput — {date.today()} (latency {args.latency * 1000:.0f} ms, {args.seeds} seeds/level, "
             f"{cores} cores, seeds = max(seeds, concurrency), `python bench/synth_throughput.py`)\n",
             "| concurrency | tasks | LM calls | calls/task | wall s | tasks/s | LM-bound limit | ratio | CPU s/task | CPU-bound limit | ratio to tighter limit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {} | {:.2f} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(*r))
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
