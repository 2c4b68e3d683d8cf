"""Store ingest benchmark: an M-TRACE-sized store (177K trajectories, ~1M steps) through the real writer.

Then two questions, answered (a) with DuckDB SQL and (b) the MAT way, from one JSON file per
trajectory on disk, read and aggregated in Python:

- tool usage counts: tool calls per tool name;
- steps histogram: trajectories per number of steps.

Both must give identical answers. Targets: ingest <= 15 s; SQL >= 50x faster than the JSON files.

    python bench/store_ingest.py                     # full size, appends to bench/RESULTS.md
    python bench/store_ingest.py --trajectories 5000 --no-results   # a quick look
    python bench/store_ingest.py --ingest-only       # ingest figures only (no JSON files, ~1 min)

On a machine shared with other jobs the wall time of the ingest mostly measures the wait for a core;
the CPU seconds it prints (all threads) are the work itself.

Synthetic data is built column-wise with numpy/pyarrow (no Python loop over a million dicts); the
ingest itself goes through ``store.writer.put_arrow`` exactly as the pipeline's bulk path would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmat.store import Store  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
M_TRACE_TRAJECTORIES = 177_000
CHUNK_ROWS = 100_000
INGEST_TARGET_S = 15.0
RATIO_TARGET = 50.0

# Steps per trajectory (MAT/M-TRACE agents stop at 8 steps); mean ~5.64, so 177K trajectories ~ 1M steps.
STEP_COUNTS = np.arange(1, 9)
STEP_PROBS = np.array([0.01, 0.04, 0.08, 0.14, 0.18, 0.19, 0.17, 0.19])
# Tool calls in a non-final step; the final step calls final_answer.
CALLS_PER_STEP, CALL_PROBS = np.arange(4), np.array([0.25, 0.50, 0.20, 0.05])
TOOLS = {  # name: share of calls, argument template
    "visualizer": (0.22, '{{"question": "What is shown in the image?", "image_path": "image_{i}.jpg"}}'),
    "ocr": (0.18, '{{"image_path": "image_{i}.jpg"}}'),
    "ask_search_agent": (0.18, '{{"query": "population of city number {i} in 2020"}}'),
    "objectlocation": (0.12, '{{"object": "cup", "image_path": "image_{i}.jpg"}}'),
    "inspect_file_as_text": (0.12, '{{"file_path": "report_{i}.pdf", "question": "total revenue?"}}'),
    "facedetection": (0.06, '{{"image_path": "photo_{i}.png"}}'),
    "image_edit": (0.05, '{{"prompt": "remove the background", "image_path": "image_{i}.jpg"}}'),
    "image_generator": (0.04, '{{"prompt": "a red bicycle on a beach, variant {i}"}}'),
    "segmentation": (0.03, '{{"image_path": "image_{i}.jpg", "prompt": "the dog"}}'),
}
POOL = 256  # distinct texts per template family


def _pool(template: str, n: int = POOL) -> pa.Array:
    return pa.array([template.format(i=i) for i in range(n)], pa.string())


def _pick(pool: pa.Array, rng: np.random.Generator, n: int) -> pa.Array:
    return pool.take(pa.array(rng.integers(0, len(pool), n)))


def _ids(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array([f"{x:020x}" for x in rng.integers(0, 2**63, n, dtype=np.int64)], pa.string())


def generate(n_traj: int, seed: int, tool_call_type: pa.DataType) -> tuple[pa.Table, pa.Table]:
    """(trajectories, steps) as Arrow tables with the store's column types."""
    rng = np.random.default_rng(seed)
    n_steps = rng.choice(STEP_COUNTS, size=n_traj, p=STEP_PROBS).astype(np.int32)
    total = int(n_steps.sum())
    starts = np.concatenate([[0], np.cumsum(n_steps)[:-1]])
    traj_of_step = np.repeat(np.arange(n_traj), n_steps)
    idx = (np.arange(total) - np.repeat(starts, n_steps)).astype(np.int32)
    is_final = idx == np.repeat(n_steps - 1, n_steps)
    traj_ids, task_ids = _ids(rng, n_traj), _ids(rng, n_traj)

    # tool_calls: a list<struct> built from offsets and flat child arrays
    calls = np.where(is_final, 1, rng.choice(CALLS_PER_STEP, size=total, p=CALL_PROBS)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(calls)]).astype(np.int32)
    n_calls = int(offsets[-1])
    names = list(TOOLS)
    shares = np.array([TOOLS[t][0] for t in names])
    name_idx = rng.choice(len(names), size=n_calls, p=shares / shares.sum())
    final_call_pos = offsets[:-1][is_final]
    name_arr = np.array(names + ["final_answer"], dtype=object)
    name_idx[final_call_pos] = len(names)
    call_names = pa.array(name_arr[name_idx], pa.string())
    arg_pools = [_pool(TOOLS[t][1]) for t in names] + [_pool('{{"answer": "answer {i}"}}')]
    arg_pick = rng.integers(0, POOL, n_calls)
    arguments = pa.concat_arrays(arg_pools).take(pa.array(name_idx * POOL + arg_pick))
    results = _pick(_pool("Result {i}: the image shows a kitchen with 3 cups, a kettle and a window."), rng, n_calls)
    call_error = pa.array(np.where(rng.random(n_calls) < 0.03, "ToolError: file not found", None), pa.string())
    struct_type = tool_call_type.value_type
    struct = pa.StructArray.from_arrays(
        [call_names, arguments, results, pa.array(rng.gamma(2.0, 400.0, n_calls)), call_error],
        fields=list(struct_type),
    )
    tool_calls = pa.ListArray.from_arrays(pa.array(offsets), struct, type=tool_call_type)

    has_error = rng.random(total) < 0.08
    image_counts = np.where(rng.random(total) < 0.10, 1, 0).astype(np.int32)
    img_offsets = pa.array(np.concatenate([[0], np.cumsum(image_counts)]).astype(np.int32))
    images = pa.ListArray.from_arrays(img_offsets, _pick(_pool("ab/{i:064x}.png"), rng, int(image_counts.sum())))
    steps = pa.table({
        "traj_id": traj_ids.take(pa.array(traj_of_step)),
        "idx": pa.array(idx),
        "thought": _pick(_pool("Thought: I need to find the answer, so I will call a tool on the input (variant {i}) "
                               "and then compare its output with the question before answering."), rng, total),
        "code": _pick(_pool("result = ocr(image_path='image_{i}.jpg')\nprint(result)\n"
                            "count = len([w for w in result.split() if w.isdigit()])\nprint(count)"), rng, total),
        "observation": _pick(_pool("Execution logs:\nThe image contains the text 'Total: {i} EUR' near the bottom "
                                   "right corner, printed in a bold sans-serif font.\nLast output: None"), rng, total),
        "tool_calls": tool_calls,
        "error": pa.array(np.where(has_error, "NameError: name 'reslt' is not defined", None), pa.string()),
        "images": images,
        "duration_ms": pa.array(rng.gamma(2.0, 900.0, total)),
    })
    n_errors = np.add.reduceat(has_error.astype(np.int32), starts)
    trajectories = pa.table({
        "traj_id": traj_ids,
        "task_id": task_ids,
        "run_id": pa.array(["bench-run"] * n_traj),
        "attempt": pa.array(np.zeros(n_traj, np.int32)),
        "controller": pa.array(["openai/gpt-4o-mini"] * n_traj),
        "answer": _pick(_pool("The answer is {i}."), rng, n_traj),
        "status": pa.array(["answered"] * n_traj),
        "verdict": pa.array(["correct"] * n_traj),
        "n_steps": pa.array(n_steps),
        "n_errors": pa.array(n_errors.astype(np.int32)),
        "created_at": pa.array(np.full(n_traj, np.datetime64("2026-01-01T00:00:00", "us"))),
    })
    return trajectories, steps


def ingest(store: Store, trajectories: pa.Table, steps: pa.Table) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) to put everything and flush."""
    t0, c0 = time.perf_counter(), time.process_time()
    for table_name, table in (("trajectories", trajectories), ("steps", steps)):
        for start in range(0, table.num_rows, CHUNK_ROWS):
            store.writer.put_arrow(table_name, table.slice(start, CHUNK_ROWS))
    store.writer.flush()
    return time.perf_counter() - t0, time.process_time() - c0


TOOL_COUNTS_SQL = """
    SELECT call.name AS tool, count(*) AS calls
    FROM steps, UNNEST(tool_calls) AS t(call)
    GROUP BY 1
"""
HISTOGRAM_SQL = """
    SELECT n_steps, count(*) AS trajectories
    FROM (SELECT traj_id, count(*) AS n_steps FROM steps GROUP BY traj_id)
    GROUP BY 1
"""


def answer_sql(store: Store) -> tuple[dict, dict, float]:
    t0 = time.perf_counter()
    tools = {r["tool"]: r["calls"] for r in store.sql(TOOL_COUNTS_SQL)}
    hist = {r["n_steps"]: r["trajectories"] for r in store.sql(HISTOGRAM_SQL)}
    return tools, hist, time.perf_counter() - t0


def write_json_files(trajectories: pa.Table, steps: pa.Table, folder: Path) -> float:
    """One JSON file per trajectory with its steps, the way MAT ships its trajectories."""
    t0 = time.perf_counter()
    cols = {name: steps.column(name).to_pylist() for name in steps.column_names if name != "traj_id"}
    for call_list in cols["tool_calls"]:
        for call in call_list or ():
            call["arguments"] = json.loads(call["arguments"])
    traj = trajectories.select(["traj_id", "task_id", "answer", "n_steps"]).to_pylist()
    pos = 0
    for t in traj:
        n = t["n_steps"]
        record = {
            "traj_id": t["traj_id"], "task_id": t["task_id"], "answer": t["answer"],
            "steps": [{k: cols[k][i] for k in cols} for i in range(pos, pos + n)],
        }
        pos += n
        with open(folder / f"{t['traj_id']}.json", "w", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False))  # one write: json.dump's many small ones are ~5x slower
    return time.perf_counter() - t0


def answer_json(folder: Path) -> tuple[dict, dict, float]:
    t0 = time.perf_counter()
    tools: Counter = Counter()
    hist: Counter = Counter()
    with os.scandir(folder) as entries:
        for entry in entries:
            with open(entry.path, encoding="utf-8") as f:
                record = json.load(f)
            hist[len(record["steps"])] += 1
            for step in record["steps"]:
                for call in step["tool_calls"] or ():
                    tools[call["name"]] += 1
    return dict(tools), dict(hist), time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=M_TRACE_TRAJECTORIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ingest-only", action="store_true", help="skip the JSON-file comparison")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the temporary store and JSON files")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmat-bench-store-", dir=args.dir))
    try:
        fig = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if fig is None:
        return 1
    ok = fig["ingest_s"] <= INGEST_TARGET_S and (args.ingest_only or fig["ratio_first"] >= RATIO_TARGET)
    if not args.no_results:
        append_results(fig)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


def run(args: argparse.Namespace, work: Path) -> dict | None:
    """Every figure of one run (None when SQL and JSON files disagree)."""
    fig: dict = {"seed": args.seed, "load_before": os.getloadavg()[0]}
    store = Store.open(work / "mmat.duckdb")
    tool_call_type = store.table_spec("steps").schema.field("tool_calls").type

    t0 = time.perf_counter()
    trajectories, steps = generate(args.trajectories, args.seed, tool_call_type)
    fig["gen_s"] = time.perf_counter() - t0
    fig["n_traj"], fig["n_steps"] = trajectories.num_rows, steps.num_rows
    fig["n_calls"] = int(pc.sum(pc.list_value_length(steps.column("tool_calls"))).as_py())
    fig["arrow_mb"] = (trajectories.nbytes + steps.nbytes) / 1e6
    print(f"generated {fig['n_traj']:,} trajectories, {fig['n_steps']:,} steps, {fig['n_calls']:,} tool calls "
          f"({fig['arrow_mb']:.0f} MB Arrow) in {fig['gen_s']:.1f} s")

    fig["ingest_s"], fig["ingest_cpu_s"] = ingest(store, trajectories, steps)
    fig["rows"] = fig["n_traj"] + fig["n_steps"]
    print(f"ingest through the writer: {fig['ingest_s']:.2f} s, {fig['rows'] / fig['ingest_s']:,.0f} rows/s, "
          f"{fig['ingest_cpu_s']:.1f} CPU-s (target <= {INGEST_TARGET_S:.0f} s; load average before: "
          f"{fig['load_before']:.1f})")

    redo = steps.slice(0, min(100_000, fig["n_steps"]))
    fig["redo_rows"] = redo.num_rows
    t0 = time.perf_counter()
    store.writer.put_arrow("steps", redo)
    store.writer.flush()
    fig["upsert_s"] = time.perf_counter() - t0
    count = store.sql("SELECT count(*) AS n FROM steps")[0]["n"]
    if count != fig["n_steps"]:
        raise SystemExit(f"rerun duplicated rows: {count} != {fig['n_steps']}")
    print(f"rerun of {redo.num_rows:,} existing steps (upsert path): {fig['upsert_s']:.2f} s, still {count:,} rows")

    t0 = time.perf_counter()
    store.close()
    fig["close_s"] = time.perf_counter() - t0
    fig["db_mb"] = (work / "mmat.duckdb").stat().st_size / 1e6
    print(f"close (flush + checkpoint): {fig['close_s']:.2f} s; database file {fig['db_mb']:.0f} MB")
    if args.ingest_only:
        return fig

    store = Store.open(work / "mmat.duckdb", read_only=True)
    sql_tools, sql_hist, fig["sql_first_s"] = answer_sql(store)
    fig["sql_s"] = min(answer_sql(store)[2] for _ in range(3))
    store.close()
    print(f"SQL: both answers in {fig['sql_first_s'] * 1000:.0f} ms (first run), {fig['sql_s'] * 1000:.0f} ms (best of 3)")

    folder = work / "mat_json"
    folder.mkdir()
    fig["write_s"] = write_json_files(trajectories, steps, folder)
    fig["json_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"wrote {fig['n_traj']:,} MAT-style JSON files ({fig['json_mb']:.0f} MB) in {fig['write_s']:.1f} s")
    json_tools, json_hist, fig["json_s"] = answer_json(folder)
    print(f"JSON files: both answers in {fig['json_s']:.2f} s")

    if json_tools != sql_tools or json_hist != sql_hist:
        print(f"MISMATCH\n sql: {sql_tools} {sql_hist}\n json: {json_tools} {json_hist}")
        return None
    fig["ratio_first"], fig["ratio_best"] = fig["json_s"] / fig["sql_first_s"], fig["json_s"] / fig["sql_s"]
    print(f"identical answers; SQL is {fig['ratio_first']:.0f}x faster (first run), {fig['ratio_best']:.0f}x "
          f"(best of 3); target >= {RATIO_TARGET:.0f}x")
    print("tool usage:", dict(sorted(sql_tools.items(), key=lambda kv: -kv[1])))
    print("steps histogram:", dict(sorted(sql_hist.items())))
    return fig


def append_results(v: dict) -> None:
    lines = [
        "",
        f"## store_ingest — {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), shared with other jobs: load average "
        f"{v['load_before']:.1f} before the ingest, {os.getloadavg()[0]:.1f} at the end. Python "
        f"{platform.python_version()}, duckdb {duckdb.__version__}, pyarrow {pa.__version__}.",
        f"Data: {v['n_traj']:,} trajectories, {v['n_steps']:,} steps, {v['n_calls']:,} nested tool calls "
        f"({v['arrow_mb']:.0f} MB as Arrow; synthetic, M-TRACE sized, seed {v['seed']}), generated column-wise "
        f"in {v['gen_s']:.1f} s.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| ingest through `writer.put_arrow` + flush | {v['ingest_s']:.2f} s ({v['rows'] / v['ingest_s']:,.0f} rows/s; "
        f"{v['ingest_cpu_s']:.1f} CPU-s over DuckDB's threads) | <= {INGEST_TARGET_S:.0f} s |",
        f"| rerun of {v['redo_rows']:,} existing steps (upsert path) | {v['upsert_s']:.2f} s, no duplicates | |",
        f"| close (flush + checkpoint); DB file | {v['close_s']:.2f} s; {v['db_mb']:.0f} MB | |",
    ]
    if "json_s" not in v:  # --ingest-only
        lines += ["", "Ingest only (`--ingest-only`): no JSON-file comparison in this run.", ""]
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n".join(lines))
        return
    lines += [
        f"| SQL: tool usage counts + steps histogram | {v['sql_first_s'] * 1000:.0f} ms first run, "
        f"{v['sql_s'] * 1000:.0f} ms best of 3 | |",
        f"| MAT-style JSON files ({v['json_mb']:.0f} MB, warm page cache): read + aggregate | {v['json_s']:.2f} s | |",
        f"| speed-up of SQL over JSON files | {v['ratio_first']:.0f}x (first run), {v['ratio_best']:.0f}x (best of 3) "
        f"| >= {RATIO_TARGET:.0f}x |",
        "",
        "Both methods gave identical tool counts and histograms. Writing the JSON files "
        f"(not part of the comparison) took {v['write_s']:.1f} s.",
        "",
    ]
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
