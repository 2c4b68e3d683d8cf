"""Aggregation: greedy and best-of-N kept apart, per-level figures, what AnsAcc counts, scoring failures."""

import json

import pytest

from mmat.errors import SandboxError
from mmat.eval.items import EvalItem
from mmat.eval.metrics import aggregate, summary_line
from mmat.eval.outcome import AgentOutcome
from mmat.eval.results import ItemResult, score_failure, score_outcome


def _gaia(key, answer, level):
    return EvalItem(key=key, question=f"q{key}", gt=answer, level=level, answer_kind="gaia", tool_gold_known=False)


def _outcome(answer, **kw):
    return AgentOutcome(answer=answer, n_steps=kw.pop("n_steps", 2), **kw)


def test_greedy_and_best_of_n_are_separate_and_split_by_level():
    items = [_gaia("a", "1", "1"), _gaia("b", "2", "1"), _gaia("c", "3", "2")]
    answers = {  # (item, sample) -> answer; a: greedy right; b: only sample 2 right; c: never right
        ("a", 0): "1", ("a", 1): "x", ("a", 2): "x",
        ("b", 0): "x", ("b", 1): "x", ("b", 2): "2",
        ("c", 0): "x", ("c", 1): "x", ("c", 2): "x",
    }
    results = [score_outcome("r", i, s, _outcome(answers[(i.key, s)])) for i in items for s in range(3)]
    m = aggregate("gaia", items, results, best_of_n=3)
    assert m.greedy.ans_acc["gaia"].value == pytest.approx(1 / 3)
    assert m.best_of_n_ans_acc["gaia"].value == pytest.approx(2 / 3)
    assert m.greedy.tool_items == 0 and m.greedy.tool_exact is None  # GAIA has no reference tool calls
    assert m.by_level["1"].ans_acc["gaia"].value == 0.5 and m.by_level["2"].ans_acc["gaia"].value == 0.0
    assert m.best_of_n_by_level["1"]["gaia"].value == 1.0 and m.best_of_n_by_level["2"]["gaia"].value == 0.0
    assert m.counted == 3 and m.not_counted == {}


def test_best_of_one_reports_no_best_of_n():
    items = [_gaia("a", "1", None)]
    m = aggregate("gaia", items, [score_outcome("r", items[0], 0, _outcome("1"))], best_of_n=1)
    assert m.best_of_n_ans_acc is None and m.by_level == {} and m.greedy.ans_acc["gaia"].value == 1.0


def test_only_whitelist_items_count_and_the_rest_is_listed():
    items = [
        EvalItem(key="w", question="q", gt={"whitelist": [["5"]], "blacklist": None}, answer_kind="whitelist",
                 gold_tool_calls=["ocr"]),
        EvalItem(key="s", question="q", gt=["poem"], answer_kind="subjective", gold_tool_calls=["visualizer"]),
        EvalItem(key="n", question="q", gt=None, answer_kind="none", gold_tool_calls=["image_generator"]),
    ]
    outcomes = {
        "w": _outcome("5", tools_called=["ocr", "final_answer"], n_code_steps=2, n_code_errors=1),
        "s": _outcome("poem", tools_called=["visualizer"], n_code_steps=1),
        "n": _outcome("", tools_called=[], n_code_steps=0),
    }
    results = [score_outcome("r", i, 0, outcomes[i.key]) for i in items]
    m = aggregate("gta", items, results, best_of_n=1)
    assert m.counted == 1 and m.not_counted == {"none": 1, "subjective": 1}
    assert m.greedy.ans_acc["mat"].counted == 1 and m.greedy.ans_acc["gta"].value == 1.0
    # ToolAcc over all three items: exact, exact, nothing called when image_generator was needed
    assert m.greedy.tool_items == 3 and m.greedy.tool_exact == pytest.approx(2 / 3)
    # CodeExec is a mean over items with code steps: (0.5 + 1.0) / 2
    assert m.greedy.code_items == 2 and m.greedy.code_exec == pytest.approx(0.75)
    line = summary_line(m)
    assert "on 1 counted items (not counted: 1 none, 1 subjective)" in line
    assert "ToolAcc exact 66.7%" in line and "CodeExec 75.0%" in line


def test_a_failed_solve_scores_zero_and_is_counted_as_error():
    item = EvalItem(key="w", question="q", gt={"whitelist": [["5"]], "blacklist": None}, answer_kind="whitelist",
                    gold_tool_calls=["ocr"])
    failed = score_failure("r", item, 0, SandboxError("worker died"))
    assert failed.error == "solve failed: SandboxError: worker died" and failed.solve_failed
    assert failed.ans_acc == {"mat": 0.0, "gta": 0.0, "gta_official": 0.0} and failed.tool_exact is False and failed.code_exec is None
    m = aggregate("gta", [item], [failed], best_of_n=1)
    assert m.greedy.n_errors == 1 and m.greedy.ans_acc["mat"].value == 0.0 and m.greedy.mean_steps is None
    assert m.greedy.errors_by_kind == {"solve_failed": 1}


def test_fallback_error_limit_and_unreadable_steps_are_errors_by_kind_but_keep_their_scores():
    items = [_gaia(k, "7", None) for k in "abcd"]
    outcomes = [
        _outcome("7", status="fallback"), _outcome("7", status="error_limit", error="agent stopped: error_limit"),
        _outcome("7", n_unreadable_steps=1), _outcome("7"),
    ]
    results = [score_outcome("r", i, 0, o) for i, o in zip(items, outcomes)]
    assert [r.error_kind for r in results] == ["fallback", "error_limit", "unreadable", None]
    m = aggregate("gaia", items, results, best_of_n=1)
    assert m.greedy.n_errors == 3 and m.greedy.errors_by_kind == {"error_limit": 1, "fallback": 1, "unreadable": 1}
    assert m.greedy.ans_acc["gaia"].value == 1.0  # still scored
    assert "3 errors (1 error_limit, 1 fallback, 1 unreadable)" in summary_line(m)


def test_items_with_an_empty_gold_tool_set_are_left_out_of_toolacc_and_counted_apart():
    wl = {"whitelist": [["5"]], "blacklist": None}
    items = [EvalItem(key="a", question="q", gt=wl, answer_kind="whitelist", gold_tool_calls=["ocr"]),
             EvalItem(key="b", question="q", gt=wl, answer_kind="whitelist", gold_tool_calls=[]),
             EvalItem(key="c", question="q", gt=wl, answer_kind="whitelist", gold_tool_calls=[])]
    outcomes = [_outcome("5", tools_called=["ocr"]), _outcome("5", tools_called=["visualizer"]), _outcome("5")]
    results = [score_outcome("r", i, 0, o) for i, o in zip(items, outcomes)]
    assert results[1].tool_exact is None and results[1].details["called_without_gold"] is True
    m = aggregate("gta", items, results, best_of_n=1)
    assert m.greedy.tool_items == 1 and m.greedy.tool_exact == 1.0
    assert m.greedy.tool_empty_gold == 2 and m.greedy.tool_called_without_gold == 1
    assert "(2 items with no reference tool left out)" in summary_line(m)


@pytest.mark.parametrize(("raw", "text"), [
    ('{"answer": "41"}', "41"), ("{'answer': 41}", "41"), ('{"final_answer": "Paris"}', "Paris"),
    ("  Paris ", "Paris"), ('{"colour": "red", "size": 2}', '{"colour": "red", "size": 2}'), ("{not json", "{not json"),
])
def test_the_stored_answer_is_the_answer_text_not_a_rendered_dict(raw, text):
    item = _gaia("a", "41", None)
    assert score_outcome("r", item, 0, _outcome(raw)).answer == text


def test_agent_reported_error_is_scored_not_counted_as_solve_failure():
    item = _gaia("a", "7", None)
    result = score_outcome("r", item, 0, _outcome("7", error="error_limit"))
    assert result.error == "error_limit" and not result.solve_failed and result.ans_acc["gaia"] == 1.0


def test_row_round_trip_keeps_scores():
    item = _gaia("a", "7", "2")
    result = score_outcome("r", item, 1, _outcome("7", traj_id="t1"))
    row = result.to_row()
    assert "answer_kind" not in row and set(row) >= {"eval_run_id", "item_key", "sample_idx", "ans_acc", "gt"}
    stored = {**row, "gt": json.dumps(row["gt"]), "ans_acc": json.dumps(row["ans_acc"]),
              "details": json.dumps(row["details"])}  # as DuckDB returns JSON
    assert ItemResult.from_row(stored, item) == result


def test_missing_greedy_sample_is_a_bug():
    items = [_gaia("a", "1", None)]
    with pytest.raises(ValueError, match="no greedy sample"):
        aggregate("gaia", items, [score_outcome("r", items[0], 1, _outcome("1"))], best_of_n=2)


def test_outcome_rejects_inconsistent_counts():
    with pytest.raises(ValueError):
        AgentOutcome(answer="x", n_code_steps=1, n_code_errors=2, n_steps=3)
    with pytest.raises(ValueError):
        AgentOutcome(answer="x", n_code_steps=3, n_steps=2)
