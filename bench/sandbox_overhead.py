"""Sandbox overhead: what running model code in mmat's sandbox costs compared with a plain exec.

Measures, on this machine:
- worker start (launcher + namespaces + mounts + Python start, until the worker says ready);
- per-step wall time of a trivial step, sandbox vs in-process ``exec`` (target: p50 overhead <= 20 ms);
- the same for a step with 3 tool calls (tools served by the parent over the JSON-lines channel);
- fork cost: ``Sandbox.fork()`` of a sandbox that has run 3 steps (fresh worker + replay + file sync).

    python bench/sandbox_overhead.py                 # appends a dated section to bench/RESULTS.md
    python bench/sandbox_overhead.py --no-results    # print only

The in-process exec is the baseline only: it runs this script's own fixed snippets, never model code.
Needs root (the sandbox does).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmat.sandbox import Limits, Sandbox  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
TRIVIAL = "x = 1 + 1"
THREE_TOOLS = "a = add(1, 2)\nb = shout('hi')\nc = add(a=int(a), b=3)"
TARGET_P50_MS = 20.0


class BenchTools:
    """Two instant tools: the numbers measure the RPC, not the tools."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def names(self) -> list[str]:
        return ["add", "shout"]

    def signature(self, name: str) -> list[str]:
        return {"add": ["a", "b"], "shout": ["text"]}[name]

    def call(self, name: str, kwargs: dict[str, Any]) -> str:
        return str(kwargs["a"] + kwargs["b"]) if name == "add" else str(kwargs["text"]).upper()

    def for_workspace(self, path: Path) -> BenchTools:
        return BenchTools(path)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_exec(code: str, namespace: dict[str, Any], n: int) -> list[float]:
    compiled_each_time = []
    for _ in range(n):
        t0 = time.perf_counter()
        exec(compile(code, "<bench>", "exec"), namespace)  # noqa: S102 - the baseline: fixed bench snippets only
        compiled_each_time.append((time.perf_counter() - t0) * 1000)
    return compiled_each_time


def time_sandbox(sb: Sandbox, code: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = sb.run(code)
        times.append((time.perf_counter() - t0) * 1000)
        if r.error is not None:
            raise SystemExit(f"bench step failed: {r.error}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="steps per measurement")
    ap.add_argument("--starts", type=int, default=10, help="worker starts to time")
    ap.add_argument("--forks", type=int, default=10, help="forks to time")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the sandbox needs root: run this benchmark as root")

    with tempfile.TemporaryDirectory(prefix="mmat-bench-sandbox-") as tmp:
        root = Path(tmp)
        starts = []
        for i in range(args.starts):
            t0 = time.perf_counter()
            with Sandbox(root / f"start{i}") as sb:
                starts.append((time.perf_counter() - t0) * 1000)
                sb.run("pass")

        tools = BenchTools(root / "ws")
        (root / "ws").mkdir()
        with Sandbox(root / "ws", tools=tools, limits=Limits(wall_s=30)) as sb:
            time_sandbox(sb, TRIVIAL, 20)  # warm-up
            sb_trivial = time_sandbox(sb, TRIVIAL, args.steps)
            sb_tools = time_sandbox(sb, THREE_TOOLS, args.steps)
            ns: dict[str, Any] = {"add": lambda a, b: tools.call("add", {"a": a, "b": b}), "shout": lambda text: tools.call("shout", {"text": text})}
            ex_trivial = time_exec(TRIVIAL, ns, args.steps)
            ex_tools = time_exec(THREE_TOOLS, ns, args.steps)

        with Sandbox(root / "forked", tools=BenchTools(root / "forked"), limits=Limits(wall_s=30)) as sb:
            for code in ("import json\nrows = [add(i, i) for i in range(3)]", "open('notes.txt', 'w').write(json.dumps(rows))", "total = sum(int(r) for r in rows)"):
                sb.run(code)
            forks = []
            for _ in range(args.forks):
                t0 = time.perf_counter()
                child = sb.fork()
                forks.append((time.perf_counter() - t0) * 1000)
                if child.run("print(total)").stdout != "6\n":
                    raise SystemExit("fork lost the state")
                child.close()

    rows = [
        ("worker start", starts, None),
        ("trivial step, sandbox", sb_trivial, None),
        ("trivial step, in-process exec", ex_trivial, None),
        ("3-tool step, sandbox", sb_tools, None),
        ("3-tool step, in-process exec", ex_tools, None),
        ("fork after 3 steps (1 tool call)", forks, None),
    ]
    over_trivial = statistics.median(sb_trivial) - statistics.median(ex_trivial)
    over_tools = statistics.median(sb_tools) - statistics.median(ex_tools)
    lines = ["| measurement | n | p50 ms | p95 ms |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {len(v)} | {pct(v, 0.5):.2f} | {pct(v, 0.95):.2f} |" for name, v, _ in rows]
    verdict = "met" if max(over_trivial, over_tools) <= TARGET_P50_MS else "MISSED"
    summary = (
        f"p50 overhead vs exec: trivial step {over_trivial:.2f} ms, 3-tool step {over_tools:.2f} ms "
        f"(target <= {TARGET_P50_MS:.0f} ms: {verdict}); p95 overhead trivial "
        f"{pct(sb_trivial, 0.95) - pct(ex_trivial, 0.95):.2f} ms, 3-tool {pct(sb_tools, 0.95) - pct(ex_tools, 0.95):.2f} ms."
    )
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}"
    report = "\n".join(lines) + "\n\n" + summary
    print(report)
    if not args.no_results:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with RESULTS.open("a") as f:
            f.write(
                f"\n## Sandbox overhead ({stamp})\n\n`python bench/sandbox_overhead.py` on {machine}. "
                "Fork = fresh worker + replay of the 3 steps (tool calls answered from the record) + workspace sync.\n\n"
                f"{report}\n"
            )
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
