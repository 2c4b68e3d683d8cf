"""Precision and recall of the rule checks on the labelled set (mmat/testing/labelled_set.py).

Every case goes through Synthesis's own verification (``verify_task`` then ``verify_trajectory``) with
a verifier model that says "correct" to everything, so what is rejected is rejected by the rules alone.
'Bad' is the positive class: precision = share of the rules' rejections that are really bad (target
>= 0.95: the rules must not throw good data away); recall = share of bad cases rejected, overall and
for the kinds the rules must always catch (fallback, no final answer, degenerate: target 1.0).

    python bench/rules_quality.py          # appends a dated section to bench/RESULTS.md
    python bench/rules_quality.py --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

RESULTS = Path(__file__).with_name("RESULTS.md")


def says_yes(messages, fields):
    if "passed" in fields and "verdict" not in fields:
        return {"reasons": ["looks good"], "passed": True, "rewritten_query": None}
    return {"reasons": ["correct"], "verdict": "correct", "score": 1.0}


def measure(root: Path):
    from mmat.config import load_settings
    from mmat.programs import Synthesis
    from mmat.testing import DummyLM
    from mmat.testing.labelled_set import build_labelled_set, rule_figures, run_case

    settings = load_settings(home=root / "home", teacher="dummy/yes", verifier="dummy/yes", controller="dummy/yes")
    settings.ensure_dirs()
    DummyLM(says_yes, name="yes", cycle=True)
    cases = build_labelled_set(root / "cases")
    program = Synthesis(None, settings=settings, tools=[])
    started = time.perf_counter()
    outcomes = [run_case(program, case) for case in cases]
    return outcomes, rule_figures(outcomes), time.perf_counter() - started


def render(outcomes, figures, seconds: float) -> str:
    by_kind: dict[str, list] = defaultdict(list)
    for o in outcomes:
        by_kind[o.case.kind].append(o)
    fired: Counter[str] = Counter(r.split(": ", 1)[0] for o in outcomes for r in o.reasons)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## rules_quality — {stamp} (`python bench/rules_quality.py`)", "",
        f"Labelled set: {figures['cases']} trajectories built in code ({figures['good']} good, {figures['bad']} bad), "
        f"through `Synthesis.verify_task` / `verify_trajectory` with a verifier model that says \"correct\" to "
        f"everything; {seconds:.1f} s for the whole set.", "",
        "| measure | value | target |", "|---|---|---|",
        f"| precision of rejections (rejected and bad / rejected) | **{figures['precision']:.3f}** "
        f"({figures['rejected'] - figures['good_rejected']}/{figures['rejected']}) | >= 0.95 |",
        f"| recall, fallback + no final answer + degenerate | **{figures['recall_fallback_degenerate_no_answer']:.3f}** | 1.0 |",
        f"| recall, all bad cases | {figures['recall']:.3f} | |",
        f"| recall, bad cases code can know about | {figures['recall_catchable']:.3f} | |",
        f"| good cases rejected | {figures['good_rejected']} | 0 |", "",
        "| kind | cases | rejected by rules | kept as correct |", "|---|---|---|---|",
    ]
    for kind, items in sorted(by_kind.items(), key=lambda kv: (kv[0] != "good", kv[0])):
        lines.append(f"| {kind} | {len(items)} | {sum(o.rejected_by_rules for o in items)} | {sum(o.correct for o in items)} |")
    lines += ["", "Checks that fired (a case can fail several): " + ", ".join(f"{k} {n}" for k, n in fired.most_common()) + ".",
              "Misses are wrong numbers on tasks without an expected answer: only a verifier that reads the file sees them."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="Print only; do not append to bench/RESULTS.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, figures, seconds = measure(Path(tmp))
    text = render(outcomes, figures, seconds)
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
