"""Synth throughput against a loopback OpenAI-compatible server: does the scheduler keep every LM slot busy?

The server answers every chat completion from a scripted world shaped like a real teacher's work, 8–15 LM
calls per task: query generation (3 specs per seed), file code that fails on its first try for about half
the files and is fixed on the second (a file-repair call), query-file verification, 3–8 agent steps per
trajectory (the number drawn per task; each step runs in the sandbox and calls a tool), and trajectory
verification. Each reply waits a latency drawn from a lognormal distribution (sigma 0.5) around
``--latency``, so the pipeline is LM-bound by construction. For each concurrency we report:

- tasks/s, and LM calls per task;
- LM-slot utilisation = (calls x mean latency) / (concurrency x wall), the mean latency being the mean of
  the latencies actually drawn (1.0 means every slot was busy all the time); and, from the server's own
  request spans, the utilisation *while work waited* (from the first call to the last moment every slot
  was busy) and the tail after it (the last tasks' chains of sequential calls running out: a run's
  length, not the scheduler, decides its share), and how long the run took to send its first call;
- CPU seconds per task of mmat (the machine's busy time less the fake server's, so every sandbox, decoder
  and worker process counts, however deep in the process tree; run it on an otherwise idle machine) and
  the CPU-bound ceiling cores / CPU-s per task;
  the ratio of tasks/s to min(LM-bound, CPU-bound), where LM-bound = concurrency / (calls per task x
  mean latency); and the one-interpreter bound 1 / (CPU-s per task of mmat's own process), since one
  Python process runs the DSPy modules, the store writer and the HTTP clients on at most one core's
  worth of GIL.

The fake server runs in a process of its own (``--serve``), as a real LM server runs elsewhere: its CPU
is not mmat's and it does not take mmat's GIL. Every seed's queries carry words of their own (an office
and a month), so no task is dropped as a duplicate however many seeds run.

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
import subprocess
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


OFFICES = ["Oslo", "Lima", "Perth", "Quito", "Accra", "Hanoi", "Tartu", "Cusco", "Dakar", "Porto", "Kobe",
           "Leeds", "Malmo", "Fez", "Cork", "Turin", "Nara", "Split", "Ghent", "Bergen", "Sucre", "Mombasa", "Davao"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_query_calls = iter(range(1 << 62))


def _distinct(queries: list[dict]) -> list[dict]:
    """The seed's queries with an office and a month of their own (the scripted world repeats per domain)."""
    k = next(_query_calls)
    tag = f"for the {OFFICES[k % len(OFFICES)]} office in {MONTHS[(k // len(OFFICES)) % 12]} (ledger {k})"
    return [q | {"query": q["query"].rstrip("?") + f", {tag}?"} for q in queries]


def teacher(messages, fields):
    """scripted.teacher, except that every seed's queries are its own and about half the file scripts
    fail on their first try."""
    if fields == ["queries"]:
        return {"queries": _distinct(scripted.teacher(messages, fields)["queries"])}
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
        protocol_version = "HTTP/1.1"  # keep-alive, as LM servers do (HTTP/1.0 would cost a connection per call)

        def log_message(self, *args):  # quiet
            pass

        def _send(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.startswith("/stats"):  # the bench's own counters; ?reset=1 starts a new level
                with counter["lock"]:
                    self._send(json.dumps({k: v for k, v in counter.items() if k not in ("lock", "rng")}).encode())
                    if "reset=1" in self.path:
                        counter.update(calls=0, latency_sum=0.0, by_role={}, spans=[])
                return
            # the preflight's model listing (GET /v1/models)
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
            started = time.monotonic()
            time.sleep(delay)
            with counter["lock"]:
                counter["spans"].append((started, time.monotonic()))
            reply = {
                "id": "bench", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
            }
            self._send(json.dumps(reply).encode())

    return Handler


def _machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (every core, user + system + irq + steal), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu(server_pid: int) -> tuple[float, float]:
    """(this process, mmat altogether) CPU seconds so far. mmat altogether is the machine's busy time less the
    fake server's: in process mode the sandboxes are forks of each worker's zygote, grandchildren of this
    process that no rusage of it sees while they live, so counting by process tree missed a fifth of the
    work. The machine must be otherwise idle (the table records the load before and after)."""
    import psutil

    me = resource.getrusage(resource.RUSAGE_SELF)
    server = psutil.Process(server_pid).cpu_times()
    return me.ru_utime + me.ru_stime, _machine_cpu() - (server.user + server.system)


def _stats(api_base: str, *, reset: bool = False) -> dict:
    from urllib.request import urlopen

    with urlopen(api_base.removesuffix("/v1") + ("/stats?reset=1" if reset else "/stats"), timeout=10) as reply:
        return json.loads(reply.read())


def _occupancy(spans: list, start: float, concurrency: int) -> tuple[float, float, float]:
    """From the server's request spans: (seconds to the first LM call; the mean requests in flight while
    work was waiting, i.e. from the first call to the last moment all ``concurrency`` slots were busy,
    as a share of ``concurrency``; the seconds after that moment: the tail, when the last tasks' chains
    run out and no scheduler can fill the slots)."""
    if not spans:
        return 0.0, 0.0, 0.0
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    first, last = events[0][0], events[-1][0]
    level, full_until = 0, first
    for t, step in events:
        level += step
        if level >= concurrency:
            full_until = t
    if full_until <= first:  # never all busy (a CPU-bound level): the whole run is the window
        full_until = last
    busy = sum(max(0.0, min(e, full_until) - s) for s, e in spans if s < full_until)
    return first - start, busy / (concurrency * max(1e-9, full_until - first)), last - full_until


def run_once(concurrency: int, seeds: int, api_base: str, server_pid: int, home: Path, executor: str = "local",
             workers: int | None = None) -> dict:
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth

    # seed=concurrency: each level is a run of its own in the shared home (the same request would resume
    # the previous level's run, whose seeds are all done)
    settings = load_settings(home=home, seed=concurrency, teacher="openai/teacher", verifier="openai/verifier", controller="openai/agent",
                             api_base=api_base, concurrency=concurrency, dedup_threshold=0.99, num_retries=0)
    _stats(api_base, reset=True)
    cpu0, t0, mono0 = _cpu(server_pid), time.monotonic(), time.monotonic()
    summary = run_synth(settings, SynthRequest(tasks=seeds, tools=["inspect_file_as_text", "visualizer"],
                                               trajectories_per_task=1, executor=executor, workers=workers),
                        progress=False)
    wall, (own, whole) = time.monotonic() - t0, _cpu(server_pid)
    own, whole = own - cpu0[0], whole - cpu0[1]
    stats = _stats(api_base)
    # the server's clock is time.monotonic() too (CLOCK_MONOTONIC is system-wide on Linux)
    first, steady, tail = _occupancy(stats["spans"], mono0, concurrency)
    tasks = summary.counts.get("generated", 0) + summary.counts.get("rejected", 0)
    return {"concurrency": concurrency, "seeds": seeds, "tasks": tasks, "calls": stats["calls"], "wall": wall,
            "cpu": whole, "cpu_own": own, "mean_latency": stats["latency_sum"] / max(1, stats["calls"]),
            "by_role": stats["by_role"], "first_call": first, "steady": steady, "tail": tail,
            "limit_low": min((limit for _, limit in summary.lm.get("limit_history", [])), default=concurrency)}


def serve(latency: float, rng_seed: int) -> None:
    """The fake server's own process: prints its port, serves until stdin closes."""
    counter = {"calls": 0, "latency_sum": 0.0, "by_role": {}, "spans": [], "lock": threading.Lock(),
               "rng": random.Random(rng_seed)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(latency, counter))
    server.daemon_threads = True
    server.request_queue_size = 1024  # 128 concurrent connections must not overflow the listen backlog
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="mean seconds the fake server waits per call")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per level (3 tasks each); at least level / 8")
    parser.add_argument("--levels", default="32", help="concurrency levels, comma-separated")
    parser.add_argument("--rng-seed", type=int, default=7)
    parser.add_argument("--executor", choices=["local", "process"], default="local",
                        help="mmat synth --executor: this process's threads, or worker processes")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for --executor process")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the fake server's process
    args = parser.parse_args()

    if args.serve:
        serve(args.latency, args.rng_seed)
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--latency", str(args.latency), "--rng-seed",
                               str(args.rng_seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    api_base = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
    os.environ["OPENAI_API_KEY"] = "bench-placeholder-not-a-key"  # litellm wants one; the loopback server ignores it

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    # One home for the whole bench, as a user's runs after their first: the warm-up run stores the image
    # pool and its caption embeddings. No LM reply is ever served from the cache: every seed's queries are
    # its own (_distinct), and so is every later prompt of its tasks.
    home = Path(tempfile.mkdtemp(prefix="mmat-bench-throughput-"))
    run_once(1, 1, api_base, server.pid, home)  # warm-up: imports, embedder, pool, first sandbox
    rows = []
    for level in [int(x) for x in args.levels.split(",")]:
        seeds = max(args.seeds, -(-level // 8))  # a task makes ~10 calls: a few seeds keep many slots busy
        r = run_once(level, seeds, api_base, server.pid, home, args.executor, args.workers)
        calls_per_task = r["calls"] / r["tasks"]
        tps = r["tasks"] / r["wall"]
        utilisation = r["calls"] * r["mean_latency"] / (level * r["wall"])
        lm_limit = level / (calls_per_task * r["mean_latency"])
        cpu_per_task = r["cpu"] / r["tasks"]
        own_per_task = r["cpu_own"] / r["tasks"]
        cpu_limit = cores / cpu_per_task
        gil_limit = 1 / own_per_task  # one interpreter runs mmat's own Python: at most one core of it
        rows.append((level, r["seeds"], r["tasks"], r["calls"], calls_per_task, r["mean_latency"], r["wall"], tps,
                     utilisation, r["steady"], r["tail"], r["first_call"], lm_limit, cpu_per_task, own_per_task,
                     cpu_limit, gil_limit, tps / min(lm_limit, cpu_limit), r["limit_low"]))
        print(f"concurrency {level:>3}: {tps:6.2f} tasks/s, {calls_per_task:.1f} calls/task {r['by_role']}, LM-slot "
              f"utilisation {utilisation:.2f} (while work waited {r['steady']:.2f}, then a {r['tail']:.1f} s tail; "
              f"first call after {r['first_call']:.1f} s); LM-bound {lm_limit:.2f} tasks/s; CPU {cpu_per_task:.3f} s/task "
              f"({own_per_task:.3f} in mmat's process) -> CPU-bound {cpu_limit:.2f}, one-interpreter bound "
              f"{gil_limit:.2f} tasks/s; ratio to min(LM-bound, CPU-bound) {tps / min(lm_limit, cpu_limit):.2f}",
              flush=True)
    server.stdin.close()
    server.wait(10)
    load_after = os.getloadavg()[0]

    executor_args = f" --executor {args.executor}" + (f" --workers {args.workers}" if args.workers else "")
    if args.executor == "local":
        executor_args = ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## synth throughput, task-level scheduler — {stamp} (mean latency {args.latency * 1000:.0f} ms lognormal "
             f"sigma {SIGMA}, {cores} cores, load {load_before:.1f} before / {load_after:.1f} after, "
             f"`python bench/synth_throughput.py --latency {args.latency:g} --levels {args.levels} --seeds {args.seeds}"
             f"{executor_args}`)\n",
             "| concurrency | seeds | tasks | LM calls | calls/task | mean latency s | wall s | tasks/s "
             "| LM-slot utilisation | while work waited | tail s | first call s | LM-bound tasks/s | CPU s/task "
             "| of which mmat's process | CPU-bound tasks/s | one-interpreter bound tasks/s "
             "| ratio to min(LM-bound, CPU-bound) | lowest limit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {} | {} | {:.1f} | {:.3f} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.1f} | {:.1f} | {:.2f} "
                     "| {:.3f} | {:.3f} | {:.2f} | {:.2f} | {:.2f} | {} |".format(*r))
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
