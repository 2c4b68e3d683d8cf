"""Synth throughput against a loopback OpenAI-compatible server: does the scheduler keep every LM slot busy?

The server answers every chat completion from a scripted world shaped like a real teacher's work, 8–15 LM
calls per task: query generation (3 specs per seed), file code that fails on its first try for about half
the files and is fixed on the second (a file-repair call), query-file verification, 3–8 agent steps per
trajectory (the number drawn per task; each step runs in the sandbox and calls a tool), and trajectory
verification. Each reply waits a latency drawn from a lognormal distribution (sigma 0.5) around
``--latency``, so the pipeline is LM-bound by construction. For each concurrency we report:

- tasks/s, and LM calls per task;
- LM-slot utilisation = (calls x mean latency) / (concurrency x wall), the mean latency being the mean of
  the latencies actually drawn (1.0 means every slot was busy all the time);
- CPU seconds per task (this process, its sandboxes and the fake server) and the CPU-bound ceiling
  cores / CPU-s per task; the ratio of tasks/s to min(LM-bound, CPU-bound), where
  LM-bound = concurrency / (calls per task x mean latency).

Only 127.0.0.1 is contacted. Usage: python bench/synth_throughput.py [--latency 1.0] [--levels 8,32] [--seeds 16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import sys
import tempfile
import threading
import time
import zlib
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmat.testing import scripted  # noqa: E402
from mmat.testing.dummy import format_chat, format_json, output_fields  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
SIGMA = 0.5  # lognormal shape: p95 is about 2.3x the median


def _user_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def teacher(messages, fields):
    """scripted.teacher, except that about half the file scripts fail on their first try."""
    if fields == ["code"] and scripted.field(messages, "error") is None:
        name = scripted.field(messages, "file_name") or ""
        task = scripted.field(messages, "task") or ""
        if zlib.crc32(f"{task}|{name}".encode()) % 2:
            return {"code": "raise RuntimeError('the first try forgot to write the file')"}
    return scripted.teacher(messages, fields)


def verifier(messages, fields):
    """Every task passes the query-file check (so every task gets a trajectory); trajectories as scripted."""
    if "passed" in fields and "verdict" not in fields:
        return {"reasons": ["the files hold what the query needs"], "passed": True, "rewritten_query": None}
    return scripted.verifier(messages, fields)


def agent(messages, fields):
    """3–8 steps per task (drawn from the task's text): tool calls on the first file, then the answer."""
    if fields == ["answer"]:
        return {"answer": "unknown"}
    users = [m for m in messages if m.get("role") == "user"]
    first = _user_text(users[0]) if users else ""
    steps_done = sum(1 for m in messages if m.get("role") == "assistant")
    n_steps = 3 + zlib.crc32(first.encode()) % 6
    files = re.findall(r"([\w.-]+\.(?:csv|log|txt))", first)
    name = files[0] if files else "march.csv"
    if steps_done < n_steps - 1:
        return {"thought": f"Look at {name} again (step {steps_done + 1}).", "code": f"print(inspect_file_as_text({name!r})[:{40 * (steps_done + 1)}])"}
    return {"thought": "Answer from the table.",
            "code": "import csv, glob\nfound = glob.glob('*.csv')\n"
                    "final_answer({r['category']: r['amount'] for r in csv.DictReader(open(found[0]))}['rent'] "
                    "if found else 'disk full')"}


ROLES = {"teacher": teacher, "verifier": verifier, "agent": agent}


def make_handler(latency: float, counter: dict):
    mu = math.log(latency) - SIGMA ** 2 / 2  # so that the mean of the draws is `latency`

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # the preflight's model listing (GET /v1/models)
            self._send(json.dumps({"object": "list", "data": [{"id": r, "object": "model"} for r in ROLES]}).encode())

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            role = body["model"].split("/")[-1]
            messages = body["messages"]
            outputs = ROLES[role](messages, output_fields(messages, body.get("response_format")))
            text = format_json(outputs) if body.get("response_format") else format_chat(outputs)
            with counter["lock"]:
                delay = counter["rng"].lognormvariate(mu, SIGMA)
                counter["calls"] += 1
                counter["latency_sum"] += delay
                counter["by_role"][role] = counter["by_role"].get(role, 0) + 1
            time.sleep(delay)
            reply = {
                "id": "bench", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
            }
            self._send(json.dumps(reply).encode())

    return Handler


def _cpu() -> tuple[float, float]:
    """(this process incl. the fake server, its child processes: sandboxes) CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_once(concurrency: int, seeds: int, api_base: str, counter: dict) -> dict:
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth

    home = Path(tempfile.mkdtemp(prefix=f"mmat-bench-c{concurrency}-"))  # fresh home: no DSPy cache hits
    settings = load_settings(home=home, teacher="openai/teacher", verifier="openai/verifier", controller="openai/agent",
                             api_base=api_base, concurrency=concurrency, dedup_threshold=0.99, num_retries=0)
    with counter["lock"]:
        counter.update(calls=0, latency_sum=0.0, by_role={})
    cpu0, t0 = _cpu(), time.monotonic()
    summary = run_synth(settings, SynthRequest(tasks=seeds, tools=["inspect_file_as_text", "visualizer"],
                                               trajectories_per_task=1), progress=False)
    wall, (own, kids) = time.monotonic() - t0, _cpu()
    own, kids = own - cpu0[0], kids - cpu0[1]
    tasks = summary.counts.get("generated", 0) + summary.counts.get("rejected", 0)
    return {"concurrency": concurrency, "seeds": seeds, "tasks": tasks, "calls": counter["calls"], "wall": wall,
            "cpu": own + kids, "cpu_children": kids, "mean_latency": counter["latency_sum"] / max(1, counter["calls"]), "by_role": dict(counter["by_role"]),
            "limit_low": min((limit for _, limit in summary.lm.get("limit_history", [])), default=concurrency)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="mean seconds the fake server waits per call")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per level (3 tasks each); at least level / 8")
    parser.add_argument("--levels", default="32", help="concurrency levels, comma-separated")
    parser.add_argument("--rng-seed", type=int, default=7)
    args = parser.parse_args()

    counter = {"calls": 0, "latency_sum": 0.0, "by_role": {}, "lock": threading.Lock(), "rng": random.Random(args.rng_seed)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.latency, counter))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    os.environ["OPENAI_API_KEY"] = "bench-placeholder-not-a-key"  # litellm wants one; the loopback server ignores it

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    run_once(1, 1, api_base, counter)  # warm-up: imports, embedder, pool, first sandbox
    rows = []
    for level in [int(x) for x in args.levels.split(",")]:
        seeds = max(args.seeds, -(-level // 8))  # a task makes ~10 calls: a few seeds keep many slots busy
        r = run_once(level, seeds, api_base, counter)
        calls_per_task = r["calls"] / r["tasks"]
        tps = r["tasks"] / r["wall"]
        utilisation = r["calls"] * r["mean_latency"] / (level * r["wall"])
        lm_limit = level / (calls_per_task * r["mean_latency"])
        cpu_per_task = r["cpu"] / r["tasks"]
        cpu_limit = cores / cpu_per_task
        rows.append((level, r["seeds"], r["tasks"], r["calls"], calls_per_task, r["mean_latency"], r["wall"], tps,
                     utilisation, lm_limit, cpu_per_task, cpu_limit, tps / min(lm_limit, cpu_limit), r["limit_low"]))
        print(f"concurrency {level:>3}: {tps:6.2f} tasks/s, {calls_per_task:.1f} calls/task {r['by_role']}, LM-slot "
              f"utilisation {utilisation:.2f}; LM-bound {lm_limit:.2f} tasks/s, CPU {cpu_per_task:.2f} s/task "
              f"({r['cpu_children'] / r['tasks']:.2f} in sandboxes) -> "
              f"CPU-bound {cpu_limit:.2f} tasks/s; ratio to the tighter limit {tps / min(lm_limit, cpu_limit):.2f}",
              flush=True)
    server.shutdown()
    load_after = os.getloadavg()[0]

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## synth throughput, task-level scheduler — {stamp} (mean latency {args.latency * 1000:.0f} ms lognormal "
             f"sigma {SIGMA}, {cores} cores, load {load_before:.1f} before / {load_after:.1f} after, "
             f"`python bench/synth_throughput.py --latency {args.latency:g} --levels {args.levels} --seeds {args.seeds}`)\n",
             "| concurrency | seeds | tasks | LM calls | calls/task | mean latency s | wall s | tasks/s | LM-slot utilisation "
             "| LM-bound tasks/s | CPU s/task | CPU-bound tasks/s | ratio to the tighter limit | lowest limit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {} | {} | {:.1f} | {:.3f} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.3f} | {:.2f} | {:.2f} | {} |"
                     .format(*r))
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
