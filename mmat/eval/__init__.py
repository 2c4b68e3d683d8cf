"""Evaluation: benchmark loaders (GTA, GAIA, mmat's eval split), scorers (AnsAcc, ToolAcc, CodeExec),
the concurrent runner that writes eval_runs/eval_items, and run comparison."""

from mmat.eval.ansacc import AnswerScore, ans_acc_gaia, ans_acc_gta, ans_acc_mat, parse_number, score_answer
from mmat.eval.codeexec import code_exec
from mmat.eval.compare import MetricDelta, compare_runs, flatten_metrics, load_metrics
from mmat.eval.gaia import load_gaia
from mmat.eval.gta import load_gta
from mmat.eval.items import AnswerKind, EvalItem, LoadReport, SkippedItem
from mmat.eval.loaders import BENCHES, load_bench
from mmat.eval.metrics import Accuracy, EvalMetrics, GroupMetrics, aggregate, summary_line
from mmat.eval.outcome import AgentOutcome
from mmat.eval.render import render_compare, render_metrics
from mmat.eval.results import ItemResult
from mmat.eval.runner import EvalRunResult, Solver, eval_run_id_for, run_eval
from mmat.eval.store_split import load_store_split
from mmat.eval.toolacc import ToolScore, tool_acc
from mmat.eval.toolmap import GTA_TOOL_MAP, map_gta_tool

__all__ = [
    # items and loaders
    "EvalItem", "LoadReport", "SkippedItem", "AnswerKind", "BENCHES",
    "load_bench", "load_gta", "load_gaia", "load_store_split", "GTA_TOOL_MAP", "map_gta_tool",
    # scorers
    "AnswerScore", "score_answer", "ans_acc_mat", "ans_acc_gta", "ans_acc_gaia", "parse_number",
    "ToolScore", "tool_acc", "code_exec",
    # runner
    "AgentOutcome", "Solver", "run_eval", "EvalRunResult", "ItemResult", "eval_run_id_for",
    "Accuracy", "GroupMetrics", "EvalMetrics", "aggregate", "summary_line",
    # comparison and rendering
    "MetricDelta", "compare_runs", "flatten_metrics", "load_metrics", "render_metrics", "render_compare",
]
