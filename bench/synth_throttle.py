"""Adaptive concurrency against a rate-limited server: the share of the allowed rate mmat sustains.

A loopback OpenAI-compatible server (``mmat.testing.fault_server.FaultServer``) answers at most
``--capacity`` chat requests at once; one more gets 429 with ``Retry-After: --retry-after``. Latency is
lognormal around ``--latency``. mmat drives it through real ``dspy.LM`` calls (``mmat.lm.build_lm``,
``hosted_vllm/teacher``) from ``--concurrency`` threads, all inside ``use_gate(LMGate(--concurrency))``:
demand exceeds the capacity, so only the gate's AIMD keeps the run near it.

Measured at the server, after ``--warmup`` seconds:

    allowed rate = capacity / mean latency of the answered requests   (the most the server can serve)
    sustained    = answered requests / window
    throttled    = 429 replies / requests that arrived in the window

Targets (issue #18): sustained >= 0.85 of the allowed rate, throttled <= 5 %. For comparison the same
load runs without a gate (DSPy's own retries, fixed concurrency) for ``--baseline`` seconds.

With ``--synth-seeds N`` a whole ``run_synth`` (the task-level scheduler, its gate at ``--concurrency``) makes
N seeds against the same kind of server (the scripted world for teacher, verifier and agent), measured the
same way from ``--warmup`` seconds after its first LM request to ``--tail`` seconds before its end (when too
few calls are ready to fill the server: a drain, not throttling). Its share of the allowed rate says how well
the run fills the server's slots, which on a loaded 2-core machine the run's own CPU work limits.

Only 127.0.0.1 is contacted. Usage: python bench/synth_throttle.py [--capacity 8] [--concurrency 32]
[--latency 1] [--retry-after 1] [--warmup 15] [--duration 45] [--baseline 15] [--no-results]
[--show-history] [--synth-seeds 24] [--executor local|process] [--workers N] [--tail 5]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmat.config import load_settings  # noqa: E402
from mmat.lm import build_lm  # noqa: E402
from mmat.lm_gate import BudgetExhausted, LMGate, use_gate  # noqa: E402
from mmat.testing.fault_server import FaultServer  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGET_RATE, TARGET_THROTTLED = 0.85, 0.05


def lognormal(mean: float, sigma: float, seed: int = 7):
    """Draws with the given mean (mu chosen so that E[X] = mean)."""
    rng, lock = random.Random(seed), threading.Lock()
    mu = math.log(mean) - sigma**2 / 2

    def draw() -> float:
        with lock:
            return rng.lognormvariate(mu, sigma)

    return draw


def drive(lm, threads: int, seconds: float, tag: str) -> dict[str, int]:
    """``threads`` workers call the model with distinct prompts (no cache hits) for ``seconds``."""
    stop_at = time.monotonic() + seconds
    outcome = {"ok": 0, "error": 0}
    lock = threading.Lock()

    def worker(w: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            try:
                lm(messages=[{"role": "user", "content": f"{tag} worker {w} call {i}: write the file's code"}])
                key = "ok"
            except BudgetExhausted:
                return
            except Exception:  # noqa: BLE001 -- retries ran out: counted, the bench goes on as a run would
                key = "error"
            with lock:
                outcome[key] += 1

    pool = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return outcome


def window_figures(events: list[dict], start: float, end: float, capacity: int) -> dict[str, float]:
    answered = [e for e in events if e["status"] == 200 and e["finished"] is not None and start <= e["finished"] < end]
    arrived = [e for e in events if start <= e["arrived"] < end]
    throttled = sum(1 for e in arrived if e["status"] == 429)
    mean_latency = sum(e["finished"] - e["arrived"] for e in answered) / max(1, len(answered))
    allowed = capacity / mean_latency if answered else float("nan")
    sustained = len(answered) / (end - start)
    busy = sum(min(e["finished"], end) - max(e["arrived"], start) for e in events
               if e["status"] == 200 and e["finished"] is not None and e["finished"] > start and e["arrived"] < end)
    return {"busy": busy / (end - start),"answered": len(answered), "arrived": len(arrived), "throttled": throttled,
            "throttled_share": throttled / max(1, len(arrived)), "mean_latency": mean_latency,
            "allowed": allowed, "sustained": sustained, "ratio": sustained / allowed if answered else float("nan")}


def mean_limit(history: list[tuple[float, int]], start: float, end: float) -> float:
    """The limit's time-weighted mean over [start, end] (seconds since the gate was made)."""
    total, points = 0.0, [*history, (end, history[-1][1])]
    for (t, limit), (t_next, _) in zip(points, points[1:]):
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            total += limit * (hi - lo)
    return total / (end - start)


def synth_run(args: argparse.Namespace) -> list[str]:
    """One run_synth through the scheduler against a throttling server; the table row and a note."""
    from mmat.pipeline.synth import SynthRequest, run_synth

    home = tempfile.mkdtemp(prefix="mmat-throttle-synth-")
    server = FaultServer(max_concurrent=args.capacity, throttle_retry_after=args.retry_after,
                         latency_s=lognormal(args.latency, args.sigma, seed=11)).start()
    try:
        settings = load_settings(home=home, teacher="hosted_vllm/teacher", verifier="hosted_vllm/verifier",
                                 controller="hosted_vllm/agent", api_base=server.api_base, concurrency=args.concurrency,
                                 dedup_threshold=0.99, num_retries=8, request_timeout_s=30.0,
                                 structured_output="json_schema")
        t0 = time.monotonic()
        summary = run_synth(settings, SynthRequest(tasks=args.synth_seeds, tools=["inspect_file_as_text", "visualizer"],
                                                   trajectories_per_task=1, executor=args.executor,
                                                   workers=args.workers), progress=False)
        t_end = time.monotonic()
    finally:
        server.stop()
    events = server.events
    first = min((e["arrived"] for e in events), default=t0)  # setup (pool, sandboxes) comes before any LM call
    start, end = first + args.warmup, t_end - args.tail
    if end - start < 5:
        return [f"| synth run ({args.synth_seeds} seeds) | run too short to measure ({t_end - t0:.0f} s) | | | | | |"]
    f = window_figures(events, start, end, args.capacity)
    lm = getattr(summary, "lm", None) or {}  # the gate's figures, where the run has a gate
    limits = [limit for _, limit in lm.get("limit_history", [])] or [args.concurrency]
    kind = "scheduler + gate" if lm else "no gate in this run_synth"
    if args.executor == "process":
        kind += f", {args.workers or 'default'} worker processes"
    row = (f"| synth run, {kind} ({args.synth_seeds} seeds, {summary.outcomes.get('generated', 0)} tasks, "
           f"{t_end - t0:.0f} s) | {f['sustained']:.2f} | {f['allowed']:.2f} | {f['ratio']:.3f} | "
           f"{f['throttled_share']:.1%} ({f['throttled']}/{f['arrived']}) | {f['mean_latency']:.3f} | "
           f"{summary.seeds_failed} seeds failed |")
    note = (f"Synth run: status {summary.status}, {lm.get('calls', '?')} requests, {lm.get('throttled', '?')} throttled "
            f"(warm-up included), limit min {min(limits)} / final {lm.get('limit', '?')}; requests at the server on "
            f"average {f['busy']:.2f} of {args.capacity} in the window.")
    return [row, note]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacity", type=int, default=8, help="concurrent requests the server answers")
    ap.add_argument("--concurrency", type=int, default=32, help="mmat's --concurrency (the gate's ceiling)")
    ap.add_argument("--latency", type=float, default=1.0, help="mean seconds per answered request (lognormal)")
    ap.add_argument("--sigma", type=float, default=0.25, help="lognormal sigma of the latency")
    ap.add_argument("--retry-after", type=float, default=1.0, help="Retry-After the server sends with a 429 (s)")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds left out of the measurement")
    ap.add_argument("--duration", type=float, default=45.0, help="measured seconds after the warm-up")
    ap.add_argument("--baseline", type=float, default=15.0, help="seconds of the no-gate comparison (0: skip)")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--show-history", action="store_true", help="print the limit's changes after the warm-up")
    ap.add_argument("--synth-seeds", type=int, default=0, help="also run run_synth with this many seeds (0: skip)")
    ap.add_argument("--executor", choices=["local", "process"], default="local",
                    help="the synth run's mmat synth --executor (process: worker processes sharing the driver's gate)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes for --executor process")
    ap.add_argument("--tail", type=float, default=5.0, help="seconds at the end of the synth run left out")
    args = ap.parse_args()

    load_before = os.getloadavg()
    home = tempfile.mkdtemp(prefix="mmat-throttle-")
    server = FaultServer(max_concurrent=args.capacity, throttle_retry_after=args.retry_after,
                         latency_s=lognormal(args.latency, args.sigma)).start()
    try:
        settings = load_settings(home=home, api_base=server.api_base, num_retries=8, request_timeout_s=30.0)
        lm = build_lm("hosted_vllm/teacher", settings=settings)
        lm(messages=[{"role": "user", "content": "warm the client up"}])
        server.set_plan(None)  # forget the warm-up request

        gate = LMGate(args.concurrency)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        with use_gate(gate):
            gated = drive(lm, args.concurrency, args.warmup + args.duration, "gated")
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        figures = window_figures(server.events, t0 + args.warmup, t0 + args.warmup + args.duration, args.capacity)
        stats = gate.snapshot()
        after = [(t, limit) for t, limit in stats.limit_history if t >= args.warmup]
        limits_after = [limit for _, limit in after] or [stats.limit]
        cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)

        base = None
        if args.baseline > 0:
            server.set_plan(None)
            plain = build_lm("hosted_vllm/teacher", settings=load_settings(home=home, api_base=server.api_base,
                                                                            num_retries=3, request_timeout_s=30.0))
            b0 = time.monotonic()
            outcome = drive(plain, args.concurrency, args.baseline, "plain")
            base = {**window_figures(server.events, b0, b0 + args.baseline, args.capacity), **outcome}
    finally:
        server.stop()
    synth_lines = synth_run(args) if args.synth_seeds > 0 else []
    load_after = os.getloadavg()

    met = figures["ratio"] >= TARGET_RATE and figures["throttled_share"] <= TARGET_THROTTLED
    lines = [
        f"## synth throttle — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (`python bench/synth_throttle.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`)",
        "",
        f"Loopback server: at most {args.capacity} concurrent requests, 429 + Retry-After {args.retry_after:g} s above; "
        f"latency lognormal mean {args.latency:g} s (sigma {args.sigma:g}). mmat: real dspy.LM calls (build_lm, "
        f"hosted_vllm) from {args.concurrency} threads through LMGate({args.concurrency}). Warm-up {args.warmup:g} s, "
        f"measured {args.duration:g} s. {os.cpu_count()} CPUs, load avg {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after.",
        "",
        "| run | answered/s | allowed/s | share of allowed | throttled | mean latency s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| gate (AIMD) | {figures['sustained']:.2f} | {figures['allowed']:.2f} | {figures['ratio']:.3f} | "
        f"{figures['throttled_share']:.1%} ({figures['throttled']}/{figures['arrived']}) | {figures['mean_latency']:.3f} | "
        f"{gated['error']} |",
    ]
    if base is not None:
        lines.append(
            f"| no gate, DSPy retries (concurrency {args.concurrency}, {args.baseline:g} s) | {base['sustained']:.2f} | "
            f"{base['allowed']:.2f} | {base['ratio']:.3f} | {base['throttled_share']:.1%} "
            f"({base['throttled']}/{base['arrived']}) | {base['mean_latency']:.3f} | {base['error']} |")
    lines += synth_lines[:1]
    lines += [
        "",
        *([synth_lines[1], ""] if len(synth_lines) > 1 else []),
        f"Gate: {stats.calls} requests, {stats.throttled} throttled over the whole run (warm-up included); limit after "
        f"the warm-up min {min(limits_after)} / max {max(limits_after)} / time-weighted mean "
        f"{mean_limit(stats.limit_history, args.warmup, args.warmup + args.duration):.2f}, {len(after)} changes, final "
        f"{stats.limit}; requests at the server on average {figures['busy']:.2f} of {args.capacity}; "
        f"client CPU {cpu_s / max(1, stats.calls) * 1000:.1f} ms per request. "
        f"Targets (>= {TARGET_RATE:.0%} of the allowed rate, <= {TARGET_THROTTLED:.0%} throttled): "
        f"{'met' if met else 'MISSED'}.",
        "",
    ]
    text = "\n".join(lines)
    if args.show_history:
        print("limit after the warm-up (s, limit):", after)
    print(text)
    if not args.no_results:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0  # a missed target is reported (MISSED above), not an error: `make bench` runs on loaded machines too


if __name__ == "__main__":
    sys.exit(main())
