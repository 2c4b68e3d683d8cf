"""Rendered tables: greedy and best-of-N in separate columns, levels listed, deltas in percent points."""

from mmat.eval.compare import MetricDelta, flatten_metrics
from mmat.eval.items import EvalItem
from mmat.eval.metrics import aggregate
from mmat.eval.outcome import AgentOutcome
from mmat.eval.render import render_compare, render_metrics
from mmat.eval.results import score_outcome


def _metrics():
    items = [
        EvalItem(key="a", question="q", gt="4", level="1", answer_kind="gaia", tool_gold_known=False),
        EvalItem(key="b", question="q", gt="5", level="2", answer_kind="gaia", tool_gold_known=False),
    ]
    answers = {("a", 0): "4", ("a", 1): "4", ("b", 0): "x", ("b", 1): "5"}
    results = [score_outcome("r", i, s, AgentOutcome(answer=answers[(i.key, s)], n_steps=1)) for i in items for s in (0, 1)]
    return aggregate("gaia", items, results, best_of_n=2)


def test_render_metrics_shows_greedy_and_best_of_n_columns_and_levels():
    text = render_metrics(_metrics())
    assert "best-of-2" in text and "greedy" in text
    row = next(line for line in text.splitlines() if "AnsAcc (gaia)" in line)
    assert "50.00 (1/2)" in row and "100.00 (2/2)" in row
    assert "level 1: 1 items" in text and "level 2: 1 items" in text
    assert "gaia: 2 items; greedy AnsAcc gaia 50.0%" in text


def test_flatten_names_every_figure():
    figures = flatten_metrics(_metrics())
    assert figures["greedy.ans_acc.gaia"] == 0.5
    assert figures["best_of_2.ans_acc.gaia"] == 1.0
    assert figures["level_2.ans_acc.gaia"] == 0.0 and figures["level_2.best_of_2.ans_acc.gaia"] == 1.0
    assert figures["greedy.tool_exact"] is None and figures["n_items"] == 2.0


def test_render_compare_shows_percent_points_and_counts():
    deltas = [
        MetricDelta(metric="greedy.ans_acc.mat", a=0.4231, b=0.5385, delta=0.5385 - 0.4231),
        MetricDelta(metric="greedy.n_errors", a=3.0, b=1.0, delta=-2.0),
        MetricDelta(metric="greedy.code_exec", a=None, b=0.9, delta=None),
    ]
    text = render_compare(deltas, run_a="qwen2-vl", run_b="t3-agent")
    lines = text.splitlines()
    mat = next(line for line in lines if "greedy.ans_acc.mat" in line)
    assert "42.31" in mat and "53.85" in mat and "+11.54" in mat
    errors = next(line for line in lines if "greedy.n_errors" in line)
    assert "3" in errors and "-2" in errors and "%" not in errors
    assert "A = qwen2-vl vs B = t3-agent (delta = B - A)" in text
