"""Evaluation: benchmark loaders (GTA, GAIA, Agent-X, mmat's eval split), scorers as the benchmarks' own
(GAIA's leaderboard rule, GTA's evaluator, Agent-X's judge aggregation) plus mmat's AnsAcc/ToolAcc/CodeExec,
the concurrent runner that writes runs/eval_runs/eval_items, the papers' tables and run comparison."""

from mmat.eval.agentx import AGENTX_TO_GTA, load_agentx, read_generative_ids
from mmat.eval.agentx_metrics import AgentXFigures, Judgement, aggregate_agentx, toolset_f1
from mmat.eval.ansacc import (
    AnswerScore, ans_acc_gaia, ans_acc_gaia_lenient, ans_acc_gta, ans_acc_mat, parse_number, score_answer,
)
from mmat.eval.codeexec import code_exec
from mmat.eval.compare import Comparison, MetricDelta, compare_runs, flatten_metrics, load_metrics, resolve_eval_run_id
from mmat.eval.gaia_score import gaia_exact, gaia_lenient
from mmat.eval.gta_tools import category_counts, category_f1
from mmat.eval.gaia import load_gaia
from mmat.eval.gta import load_gta
from mmat.eval.items import AnswerKind, EvalItem, LoadReport, SkippedItem
from mmat.eval.loaders import BENCHES, load_bench
from mmat.eval.metrics import Accuracy, EvalMetrics, GroupMetrics, GtaFigures, aggregate, summary_line
from mmat.eval.outcome import AgentOutcome
from mmat.eval.render import render_compare, render_metrics
from mmat.eval.results import ItemResult, Scoring
from mmat.eval.runner import EvalRunResult, Solver, eval_run_id_for, eval_task_id, run_eval
from mmat.eval.tables import PaperTable, paper_tables
from mmat.eval.store_split import load_store_split
from mmat.eval.toolacc import ToolScore, tool_acc
from mmat.eval.toolmap import GTA_TOOL_MAP, map_gta_tool

__all__ = [
    # items and loaders
    "EvalItem", "LoadReport", "SkippedItem", "AnswerKind", "BENCHES",
    "load_bench", "load_gta", "load_gaia", "load_agentx", "load_store_split", "read_generative_ids",
    "GTA_TOOL_MAP", "map_gta_tool", "AGENTX_TO_GTA",
    # scorers
    "AnswerScore", "score_answer", "ans_acc_mat", "ans_acc_gta", "ans_acc_gaia", "ans_acc_gaia_lenient",
    "gaia_exact", "gaia_lenient", "parse_number", "ToolScore", "tool_acc", "code_exec",
    "category_counts", "category_f1", "Judgement", "toolset_f1", "aggregate_agentx",
    # runner
    "AgentOutcome", "Solver", "Scoring", "run_eval", "EvalRunResult", "ItemResult", "eval_run_id_for", "eval_task_id",
    "Accuracy", "GroupMetrics", "EvalMetrics", "GtaFigures", "AgentXFigures", "aggregate", "summary_line",
    # comparison and rendering
    "Comparison", "MetricDelta", "compare_runs", "resolve_eval_run_id", "flatten_metrics", "load_metrics",
    "PaperTable", "paper_tables", "render_metrics", "render_compare",
]
