"""How often does the embedded teacher's output parse, and how fast is it?

Runs the real ``local/smollm2-135m`` through DSPy's JSONAdapter on a typed signature (a small
QuerySpec-like pydantic object with a list and Literals), one call per distinct ``rollout_id`` (so
DSPy's cache never answers), and reports the parse rate (target >= 95 %), tokens/s, and the
first-load (GGUF conversion) and cached-load times. Appends a dated section to bench/RESULTS.md.

    python bench/teacher_parse.py            # fresh temp MMAT_HOME: measures the conversion too
    python bench/teacher_parse.py --home .mmat --calls 10
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
from typing import Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dspy  # noqa: E402
from dspy.utils.exceptions import AdapterParseError  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from mmat.config import load_settings  # noqa: E402
from mmat.lm import adapter_for, build_lm  # noqa: E402
from mmat.local import load_local_model, local_weights_dir  # noqa: E402
from mmat.local.registry import is_converted, resolve_local  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
MODEL = "local/smollm2-135m"
TOPICS = [
    "household budgets", "a birthday party", "bird watching", "a used car purchase", "train timetables",
    "a science fair poster", "restaurant receipts", "a hiking trip", "office supplies", "a chess tournament",
]


class FileNeed(BaseModel):
    modality: Literal["image", "table", "document", "text"]
    content: str = Field(description="What the file shows or contains.")


class QuerySpec(BaseModel):
    query: str = Field(description="The request as a user would write it.")
    intended_tools: list[Literal["ocr", "visualizer", "objectlocation", "inspect_file_as_text", "ask_search_agent"]]
    file_needs: list[FileNeed]
    expected_answer_type: Literal["number", "short_text", "yes_no"]


class WriteQuery(dspy.Signature):
    """Write one realistic request a user could send to an assistant that has tools, about the topic."""

    topic: str = dspy.InputField()
    spec: QuerySpec = dspy.OutputField()


def measure_loads(settings) -> tuple[float | None, float]:
    """(first-load seconds incl. conversion, or None if already converted; cached-load seconds)."""
    first = None
    if not is_converted(resolve_local(MODEL, settings).model_dir):
        started = time.perf_counter()
        local_weights_dir(MODEL, settings)
        first = time.perf_counter() - started
    started = time.perf_counter()
    load_local_model(MODEL, settings, fresh=True)
    return first, time.perf_counter() - started


def run_calls(settings, calls: int, max_tokens: int) -> list[dict]:
    lm = build_lm(MODEL, settings=settings, max_tokens=max_tokens)
    rows = []
    with dspy.context(lm=lm, adapter=adapter_for(MODEL)):
        predict = dspy.Predict(WriteQuery)
        for i in range(calls):
            started = time.perf_counter()
            error = None
            try:
                predict(topic=TOPICS[i % len(TOPICS)], config={"rollout_id": i})
            except AdapterParseError as e:
                error = type(e).__name__
            seconds = time.perf_counter() - started
            entry = lm.history[-1]
            response = entry.get("response")
            finish = response.choices[0].finish_reason if response is not None else "?"
            rows.append({
                "ok": error is None, "error": error, "seconds": seconds, "finish": finish,
                "prompt_tokens": entry["usage"].get("prompt_tokens", 0),
                "completion_tokens": entry["usage"].get("completion_tokens", 0),
                "gen_seconds": (getattr(response, "_hidden_params", None) or {}).get("mmat_generate_seconds", seconds),
            })
            print(f"call {i + 1:>2}/{calls}: {'ok  ' if error is None else 'FAIL'} {rows[-1]['completion_tokens']:>4} tokens "
                  f"{seconds:6.1f} s finish={finish}", flush=True)
    return rows


def report(rows: list[dict], first_load: float | None, cached_load: float, max_tokens: int) -> str:
    n, ok = len(rows), sum(r["ok"] for r in rows)
    tokens = sum(r["completion_tokens"] for r in rows)
    gen = sum(r["gen_seconds"] for r in rows)
    wall = sum(r["seconds"] for r in rows)
    truncated = sum(r["finish"] == "length" for r in rows)
    lat = sorted(r["seconds"] for r in rows)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    first = f"{first_load:.1f} s" if first_load is not None else "already converted (not measured)"
    return "\n".join([
        f"## Embedded teacher parse rate ({now})",
        "",
        f"`python bench/teacher_parse.py` on {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load avg {load:.1f}. {MODEL} through DSPy's JSONAdapter (JSON-schema constrained decoding, xgrammar), "
        f"typed output QuerySpec (str, list of Literal, list of objects, Literal), {n} calls with distinct rollout_ids, "
        f"temperature 0.7, max_tokens {max_tokens}.",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| parse rate | {ok}/{n} = {100 * ok / n:.1f} % (target >= 95 %) |",
        f"| truncated at max_tokens | {truncated} |",
        f"| completion tokens per call, mean | {tokens / n:.0f} |",
        f"| prompt tokens per call, mean | {statistics.mean(r['prompt_tokens'] for r in rows):.0f} |",
        f"| generation tokens/s (completion tokens / generate() time) | {tokens / gen:.1f} |",
        f"| end-to-end tokens/s (completion tokens / call wall time) | {tokens / wall:.1f} |",
        f"| latency per call p50 / max | {statistics.median(lat):.1f} s / {lat[-1]:.1f} s |",
        f"| first load (GGUF dequantize + save safetensors + load) | {first} |",
        f"| cached load (safetensors copy, in-process) | {cached_load:.2f} s |",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--home", type=Path, default=None, help="MMAT_HOME to use (default: a fresh temp dir)")
    parser.add_argument("--no-append", action="store_true", help="print the figures without appending to RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmat-bench-") as tmp:
        settings = load_settings(home=args.home or Path(tmp))
        settings.ensure_dirs()
        first_load, cached_load = measure_loads(settings)
        print(f"first load: {first_load}, cached load: {cached_load:.2f} s", flush=True)
        rows = run_calls(settings, args.calls, args.max_tokens)
    section = report(rows, first_load, cached_load, args.max_tokens)
    print(section)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write("\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
