"""`mmat view` page latency and `mmat report` time on a larger store: pages open the store per request,
so this shows what that costs as the store grows. Prints a table and appends it to bench/RESULTS.md.

    python bench/view_pages.py [--tasks 5000] [--repeats 5]

The store is the tests' fixture (images, documents, verdicts, pairs, evals) plus N bulk tasks, each with
one two-step trajectory, a verdict and LM calls, written through the store's writer.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _bulk(home: Path, n: int) -> None:
    from mmat.store import Store
    from tests.view.storefix import RUN, T0

    with Store.open(home / "mmat.duckdb") as store:
        put = store.writer.put
        for start in range(0, n, 1000):
            ids = range(start, min(n, start + 1000))
            put("tasks", [{"task_id": f"bulk-{i}", "run_id": RUN, "domain": f"domain-{i % 12}", "query": f"bulk query {i} about a chart",
                           "intended_tools": ["ocr"], "status": "solved" if i % 3 else "rejected", "answer_type": "number",
                           "created_at": T0 + timedelta(seconds=i)} for i in ids])
            put("trajectories", [{"traj_id": f"bulk-t{i}", "task_id": f"bulk-{i}", "run_id": RUN, "controller": "dummy/agent",
                                  "answer": str(i), "status": "answered", "verdict": "correct" if i % 3 else "incorrect",
                                  "n_steps": 2 + i % 5, "origin": "synth", "created_at": T0 + timedelta(seconds=i)} for i in ids])
            put("steps", [{"traj_id": f"bulk-t{i}", "idx": k, "thought": "t", "code": "x = ocr(image_path='a.png')",
                           "tool_calls": [{"name": "ocr", "arguments": {"image_path": "a.png"}, "result": "r", "duration_ms": 1.0,
                                           "error": None}], "images": []} for i in ids for k in range(2)])
            put("verdicts", [{"verdict_id": f"bulk-v{i}", "subject_kind": "trajectory", "subject_id": f"bulk-t{i}",
                              "verifier": "trajectory", "passed": bool(i % 3), "reasons": ["ok" if i % 3 else f"wrong by {i}"],
                              "created_at": T0} for i in ids])
            put("lm_calls", [{"call_id": f"bulk-c{i}", "run_id": RUN, "module": "CodeAgent", "model": "dummy/agent",
                              "prompt_tokens": 500, "completion_tokens": 50, "cost": 0.001, "latency_ms": 100.0 + i % 400,
                              "started_at": T0 + timedelta(seconds=i)} for i in ids])
        store.writer.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000, help="bulk tasks (each with a trajectory) to add")
    parser.add_argument("--repeats", type=int, default=5, help="requests per page (median reported)")
    args = parser.parse_args()

    from starlette.testclient import TestClient

    from mmat.config import load_settings
    from mmat.pipeline.report import build_report
    from mmat.store import Store
    from mmat.view import create_app
    from tests.view.storefix import RUN, build_store

    home = Path(tempfile.mkdtemp(prefix="mmat-bench-view-")) / "home"
    build_store(home)
    started = time.perf_counter()
    _bulk(home, args.tasks)
    build_s = time.perf_counter() - started
    client = TestClient(create_app(load_settings(home=home)), base_url="http://127.0.0.1")
    pages = ["/", "/browse", "/browse?domain=domain-3&verdict=correct", "/browse?where=t.n_steps+%3E%3D+5&page=3",
             "/trajectory/traj-img", f"/runs/{RUN}", "/pairs", "/eval"]
    rows = []
    for page in pages:
        assert client.get(page).status_code == 200, page  # warm: imports, first plot
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            client.get(page)
            times.append(time.perf_counter() - t)
        rows.append((page, statistics.median(times) * 1000))
    with Store.open(home / "mmat.duckdb", read_only=True) as store:
        t = time.perf_counter()
        build_report(store, RUN)
        report_ms = (time.perf_counter() - t) * 1000

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [f"\n## view_pages ({stamp}, {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}; "
             f"{args.tasks} bulk tasks + fixture, median of {args.repeats})\n",
             "| page | ms |", "|---|---|", *(f"| `{p}` | {ms:.0f} |" for p, ms in rows),
             f"| build_report (no HTTP, no charts) | {report_ms:.0f} |",
             f"\nStore built in {build_s:.1f}s. Each request opens the store read-only and closes it (the viewer never holds "
             "the file); the report page also draws four matplotlib SVG charts."]
    text = "\n".join(lines) + "\n"
    print(text)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
