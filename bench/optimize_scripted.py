"""`mmat optimize` cost on the scripted synthesis world: wall time and LM calls per program and optimizer.

The whole loop a user runs, with scripted models (``mmat.testing.scripted``) so the figures measure
mmat's and DSPy's overhead, not a model: synthesize a few seeds, export label sheets, label them
(the bench copies the verifier's verdict and flips every third one, as a person who disagrees
sometimes would), import the labels, then compile each program. Scripted models do not read
instructions, so the metric rarely moves: quality needs a real teacher. What this shows is how many
LM calls each optimizer spends for a given budget and how long the machinery takes.

    python bench/optimize_scripted.py              # 3 seeds, appends to bench/RESULTS.md
    python bench/optimize_scripted.py --seeds 2 --no-results
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = [  # (program, optimizer, run_optimize keyword arguments)
    ("query_file_verifier", "bootstrap", {}),
    ("query_file_verifier", "mipro", {"trials": 4}),
    ("query_file_verifier", "gepa", {"trials": 2}),
    ("trajectory_verifier", "bootstrap", {}),
    ("agent", "bootstrap", {}),
    ("file_generator", "bootstrap", {}),
    ("query_generator", "bootstrap", {}),
]
TOOLS = ["inspect_file_as_text", "visualizer"]


def label_sheet(store, path: Path, kind: str) -> int:
    """Export a sheet, fill it in (verifier's verdict, every third flipped), import it."""
    from mmat.optimizers import export_label_sheet, import_labels

    export_label_sheet(store, path, kind)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    yes, no = ("pass", "reject") if kind == "task" else ("correct", "incorrect")
    labelled = [r for r in rows if r["verifier_verdict"] in (yes, no)]
    for i, row in enumerate(labelled):
        agree = row["verifier_verdict"] == yes
        row["label"] = yes if agree != (i % 3 == 2) else no
        row["note"] = "flipped by the bench" if i % 3 == 2 else ""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(labelled)
    return import_labels(store, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds to synthesize (3 specs each)")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mmat_bench_opt_"))
    os.environ["MMAT_HOME"] = str(home)
    from mmat.config import load_settings
    from mmat.pipeline.optimize import run_optimize
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.store import open_store
    from mmat.testing import DummyLM, scripted

    settings = load_settings(home=home, teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                             concurrency=2, step_timeout_s=30, dedup_threshold=0.99)
    scripted.register()
    DummyLM(lambda messages, fields: {f: "COMPLETE" if f == "observations" else "Check every figure against the files."
                                      for f in fields}, name="proposer")
    started = time.perf_counter()
    synth = run_synth(settings, SynthRequest(tasks=args.seeds, tools=TOOLS, trajectories_per_task=1), progress=False)
    synth_s = time.perf_counter() - started
    with open_store(settings) as store:
        started = time.perf_counter()
        n_labels = label_sheet(store, home / "tasks.csv", "task") + label_sheet(store, home / "trajs.csv", "trajectory")
        label_s = time.perf_counter() - started

    rows = []
    for program, optimizer, kwargs in RUNS:
        started = time.perf_counter()
        summary = run_optimize(settings, program=program, optimizer=optimizer, out=home / f"{program}.{optimizer}.json",
                               progress=False, prompt_model="dummy/proposer", **kwargs)
        seconds = time.perf_counter() - started
        with open_store(settings, read_only=True) as store:
            calls = store.sql("select count(*) n, count(*) filter (where cache_hit) hits from lm_calls where run_id = ?",
                              [summary.opt_run_id])[0]
        rows.append((program, optimizer, kwargs, summary, seconds, calls["n"], calls["hits"]))

    load = os.getloadavg()[0]
    head = (f"`python bench/optimize_scripted.py --seeds {args.seeds}` on {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, load avg {load:.1f}. Scripted models (DummyLM); concurrency 2. "
            f"Setup: synth {synth.counts.get('generated', 0)} tasks / {synth.counts.get('trajectories', 0)} trajectories "
            f"in {synth_s:.1f} s; label sheets exported, filled and imported ({n_labels} labels) in {label_s:.2f} s.")
    table = ["| program | optimizer | budget | train/val | metric before -> after | LM calls (cache hits) | seconds |",
             "|---|---|---|---:|---|---:|---:|"]
    for program, optimizer, kwargs, s, seconds, n, hits in rows:
        budget = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default"
        table.append(f"| {program} | {optimizer} | {budget} | {s.n_train}/{s.n_val} | {s.metric_before:.3f} -> "
                     f"{s.metric_after:.3f} | {n} ({hits}) | {seconds:.1f} |")
    text = "\n".join([head, "", *table])
    print(text)
    if not args.no_results:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with (Path(__file__).resolve().parent / "RESULTS.md").open("a", encoding="utf-8") as f:
            f.write(f"\n## Prompt optimization on the scripted world ({stamp})\n\n{text}\n\n"
                    "Seconds include building the sets and, for the first agent/file/query runs, loading the image "
                    "pool and MiniLM. LM calls are the run's rows in lm_calls (teacher, verifier-as-judge and "
                    "prompt-model calls together).\n")


if __name__ == "__main__":
    main()
