"""Sandbox overhead per mode: what running model code in mmat's sandbox costs compared with a plain exec.

Measures, on this machine, for each sandbox mode it can run (root mode when run as root; rootless
mode as the invoking user, or, when run as root, as a throwaway unprivileged user):
- worker start (a launcher forked by the process's zygote + namespaces + mounts + the worker forked
  from it, until the worker says ready; target p50 <= 100 ms), and a whole ``Sandbox()`` (plus its
  cgroups and, in root mode, the quota tmpfs); the first one of a process also starts the zygote;
- trivial-step overhead vs in-process ``exec`` (p50, target <= 2 ms);
- tool-call round trip (p50 of a 3-tool step minus a trivial step, per call; the tools are instant,
  so this is the RPC; target <= 5 ms);
- freeze and thaw (the parent's round trip to stop / continue every process of the sandbox; each
  step pays one of each);
- fork cost: ``Sandbox.fork()`` of a sandbox that has run 3 steps (fresh worker + replay + file sync);
- agent-visible start with a warm pool (``SandboxPool(2).acquire``: a pre-started worker adopts the
  workspace) vs a cold ``Sandbox()``, each followed by one step and close, the pool refilled between.

    python bench/sandbox_overhead.py                 # appends a dated section to bench/RESULTS.md
    python bench/sandbox_overhead.py --no-results    # print only

The in-process exec is the baseline only: it runs this script's own fixed snippets, never model code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmat.errors import SandboxError  # noqa: E402
from mmat.sandbox import Limits, Sandbox, SandboxPool  # noqa: E402
from mmat.sandbox.modes import sandbox_mode  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
TRIVIAL = "x = 1 + 1"
THREE_TOOLS = "a = add(1, 2)\nb = shout('hi')\nc = add(a=int(a), b=3)"
TARGETS_MS = {"worker start": 100.0, "trivial-step overhead": 2.0, "tool-call round trip": 5.0}
REPO = Path(__file__).resolve().parents[1]


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


def time_freeze_thaw(sb: Sandbox, n: int) -> tuple[list[float], list[float]]:
    """What the thaw before and the freeze after each of n trivial steps took, seen from the parent
    (the freeze waits until every task of the sandbox has actually stopped)."""
    worker = sb._holder[0]
    assert worker is not None
    thaws: list[float] = []
    freezes: list[float] = []

    def timed(fn: Any, into: list[float]) -> Any:
        def wrapper() -> bool:
            t0 = time.perf_counter()
            ok = fn()
            into.append((time.perf_counter() - t0) * 1000)
            return bool(ok)

        return wrapper

    worker.thaw, worker.freeze = timed(worker.thaw, thaws), timed(worker.freeze, freezes)  # type: ignore[method-assign]
    try:
        time_sandbox(sb, TRIVIAL, n)
    finally:
        del worker.thaw, worker.freeze
    return thaws, freezes


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure for the mode this process gets."""
    mode = sandbox_mode()
    with tempfile.TemporaryDirectory(prefix="mmat-bench-sandbox-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        with Sandbox(root / "first"):  # the first one in a process also starts its zygote
            first = [(time.perf_counter() - t0) * 1000]
        starts, worker_starts = [], []
        for i in range(args.starts):
            t0 = time.perf_counter()
            with Sandbox(root / f"start{i}") as sb:
                starts.append((time.perf_counter() - t0) * 1000)
                worker_starts.append(float(sb.events[0]["ms"]))
                freezer = sb._holder[0].cgroup.launcher_spec()["freezer"]["kind"]  # type: ignore[union-attr]
                sb.run("pass")

        pooled = []
        with SandboxPool(2) as pool:
            if not pool.wait_ready(timeout_s=60):
                raise SystemExit(f"the warm pool did not fill: {pool.last_error}")
            for i in range(args.starts):
                (root / f"pooled{i}").mkdir()
                t0 = time.perf_counter()
                sb = pool.acquire(root / f"pooled{i}")
                pooled.append((time.perf_counter() - t0) * 1000)
                sb.run("pass")
                sb.close()
                pool.wait_ready(timeout_s=60)
            if pool.stats["cold"]:
                raise SystemExit(f"the pool started {pool.stats['cold']} sandboxes cold: {pool.last_error}")

        tools = BenchTools(root / "ws")
        (root / "ws").mkdir()
        with Sandbox(root / "ws", tools=tools, limits=Limits(wall_s=30)) as sb:
            time_sandbox(sb, TRIVIAL, 20)  # warm-up
            sb_trivial = time_sandbox(sb, TRIVIAL, args.steps)
            sb_tools = time_sandbox(sb, THREE_TOOLS, args.steps)
            thaws, freezes = time_freeze_thaw(sb, args.steps)
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
    return {
        "mode": mode.name,
        "freezer": freezer,
        "uid": os.getuid(),
        "rows": {
            "first Sandbox() of a process (starts the zygote)": first,
            "worker start": worker_starts,
            "Sandbox() (cgroups, quota, worker)": starts,
            "pool.acquire() of a warm worker": pooled,
            "trivial step, sandbox": sb_trivial,
            "trivial step, in-process exec": ex_trivial,
            "3-tool step, sandbox": sb_tools,
            "3-tool step, in-process exec": ex_tools,
            "thaw before a step": thaws,
            "freeze after a step": freezes,
            "fork after 3 steps (1 tool call)": forks,
        },
    }


def rootless_as_throwaway_user(args: argparse.Namespace) -> dict[str, Any] | str:
    """Run this script's measurement as an unprivileged throwaway user; its figures, or why not."""
    from mmat.testing.rootless import RootlessSetupError, missing_tools, python_paths, throwaway_user, unprivileged_command

    if missing_tools():
        return f"needs {', '.join(missing_tools())}"
    work = Path(tempfile.mkdtemp(prefix="mmat-bench-rootless-"))
    try:
        with throwaway_user("mmat-bench") as (uid, gid):
            os.chmod(work, 0o755)
            home = work / "home"
            home.mkdir()
            os.chown(home, uid, gid)
            out = home / "figures.json"
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
            argv = [sys.executable, str(Path(__file__).resolve()), "--steps", str(args.steps), "--starts", str(args.starts), "--forks", str(args.forks), "--figures-json", str(out)]
            try:
                cmd = unprivileged_command(argv, uid, gid, paths=python_paths(REPO), env=env, cwd=REPO, stage=work / "stage")
            except RootlessSetupError as e:
                return str(e)
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if run.returncode != 0:
                return f"failed: {(run.stdout + run.stderr)[-800:]}"
            return json.loads(out.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(figures: dict[str, Any]) -> tuple[str, list[str]]:
    """(markdown table + summary for one mode, verdict lines)."""
    rows = figures["rows"]
    p50 = {name: pct(v, 0.5) for name, v in rows.items()}
    lines = [
        f"**{figures['mode']} mode** (uid {figures['uid']}, freezer: {figures['freezer']})",
        "",
        "| measurement | n | p50 ms | p95 ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {len(v)} | {pct(v, 0.5):.2f} | {pct(v, 0.95):.2f} |" for name, v in rows.items()]
    derived = {
        "worker start": p50["worker start"],
        "trivial-step overhead": p50["trivial step, sandbox"] - p50["trivial step, in-process exec"],
        "tool-call round trip": (p50["3-tool step, sandbox"] - p50["trivial step, sandbox"]) / 3,
    }
    verdicts = [f"{name} p50 {value:.2f} ms (target <= {TARGETS_MS[name]:g} ms: {'met' if value <= TARGETS_MS[name] else 'MISSED'})" for name, value in derived.items()]
    cold, warm = p50["Sandbox() (cgroups, quota, worker)"], p50["pool.acquire() of a warm worker"]
    verdicts.append(f"agent-visible start p50: warm pool {warm:.2f} ms vs cold Sandbox() {cold:.2f} ms ({cold / warm:.1f}x faster)")
    verdicts.append(f"freeze + thaw {p50['freeze after a step'] + p50['thaw before a step']:.2f} ms per step (p50, included in the step figures)")
    return "\n".join(lines), verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="steps per measurement")
    ap.add_argument("--starts", type=int, default=10, help="worker starts to time")
    ap.add_argument("--forks", type=int, default=5, help="forks to time")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--no-rootless", action="store_true", help="as root: do not also measure rootless mode")
    ap.add_argument("--figures-json", type=Path, help=argparse.SUPPRESS)  # the rootless child's output
    args = ap.parse_args()
    try:
        figures = [measure(args)]
    except SandboxError as e:
        raise SystemExit(f"no sandbox mode works here: {e}") from None
    if args.figures_json is not None:
        args.figures_json.write_text(json.dumps(figures[0]))
        return
    skipped = ""
    if figures[0]["mode"] == "root" and not args.no_rootless:
        other = rootless_as_throwaway_user(args)
        if isinstance(other, str):
            skipped = f"Rootless mode not measured: {other}."
        else:
            figures.append(other)
    parts, summary = [], []
    for f in figures:
        table, verdicts = report(f)
        parts.append(table)
        summary += [f"- {f['mode']}: {v}" for v in verdicts]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}"
    text = "\n\n".join(parts) + "\n\n" + "\n".join(summary) + (f"\n\n{skipped}" if skipped else "")
    print(text)
    if not args.no_results:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with RESULTS.open("a") as fh:
            fh.write(
                f"\n## Sandbox overhead per mode ({stamp})\n\n`python bench/sandbox_overhead.py` on {machine}. "
                "Each step includes one thaw and one freeze of the whole sandbox. Tool round trip = (3-tool step - "
                "trivial step) / 3 with instant tools. Fork = fresh worker + replay of the 3 steps + workspace sync. "
                "Pool = `SandboxPool(2).acquire()` (a pre-started worker adopts the workspace), refilled between "
                "acquires; the first `Sandbox()` of a process also starts its zygote.\n\n"
                f"{text}\n"
            )
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
