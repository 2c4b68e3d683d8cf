"""Agent-X judge metrics as typed DSPy signatures (DummyLM as judge): readable scores, an unreadable reply
and an out-of-range score dropped and counted, G_acc only for text answers, G_a* over generative ids, judge
calls in lm_calls, and the deterministic toolset F1 beside the judged one."""

import dspy
import pytest

from mmat.eval.agentx_metrics import aggregate_agentx, judge_view, toolset_f1
from mmat.eval.items import BenchCall, EvalItem, ReferenceStep
from mmat.eval.metrics import aggregate
from mmat.eval.outcome import AgentOutcome, OutcomeCall, OutcomeStep
from mmat.eval.results import Scoring, score_outcome
from mmat.eval.runner import run_eval
from mmat.lm import build_lm
from mmat.programs.agentx_judge import AgentXJudge
from mmat.signatures.agentx import AGENTX_SIGNATURES
from mmat.store import LMCallRecorder, Store
from mmat.testing import DummyLM

# a phrase from each signature's instructions -> the score the scripted judge gives
SCRIPT = {
    "G_s": ("grounded", 0.6), "T_p": ("picked the right tool", 0.4), "T_acc": ("gave usable results", 0.9),
    "F_acc": ("reference's strategy", 0.7), "C_s": ("used its inputs correctly", 0.5), "F_p": ("invented content", 0.8),
    "S_acc": ("cover what the request asks", 0.7), "G_acc": ("reaches the goal", 1.0), "Ts_acc": ("set of tools", 0.75),
}


def _system(messages):
    return next((m["content"] for m in messages if m["role"] == "system"), "")


def scripted_judge(unreadable=(), out_of_range=()):
    def respond(messages, fields):
        system = _system(messages)
        metric = next(m for m, (phrase, _) in SCRIPT.items() if phrase in system)
        if metric in unreadable:
            return {"justification": "hmm", "score": "quite good"}
        if metric in out_of_range:
            return {"justification": "very", "score": 7}
        return {"justification": f"judged {metric}", "score": SCRIPT[metric][1]}
    return respond


def _item(key, generative=False, query_type="objective"):
    return EvalItem(
        key=key, question="How many cars?", answer_kind="judged", gt="3", query_type=query_type, generative=generative,
        gold_tool_calls=["visualizer"], bench_calls=[BenchCall(name="CountGivenObject")],
        reference_steps=[ReferenceStep(step=1, task="count", tool="CountGivenObject", input={"object": "car"}, output="3", thought="count")],
        reference_answer="3", tool_metadata=[{"name": "ObjectCounter", "description": "counts objects"}],
    )


def _outcome(answer="3", tools=("visualizer",)):
    calls = [OutcomeCall(name=t, arguments={"question": "how many cars?"}, result="3 cars") for t in tools]
    return AgentOutcome(answer=answer, tools_called=list(tools), n_steps=1, n_code_steps=1,
                        steps=[OutcomeStep(idx=0, thought="ask the VQA tool", code="print(visualizer(...))", tool_calls=calls)])


def test_one_signature_per_metric_each_with_justification_then_score():
    assert list(AGENTX_SIGNATURES) == ["G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "Ts_acc"]
    for signature in AGENTX_SIGNATURES.values():
        assert list(signature.output_fields) == ["justification", "score"]
        assert signature.output_fields["score"].annotation is float
        assert signature.__doc__ and "ObjectCounter" not in signature.__doc__


def test_the_judge_sees_the_steps_rendered_like_the_reference():
    view = judge_view(_item("0"), _outcome())
    assert "step 1: task: count | tool: CountGivenObject" in view["reference_steps"]
    assert "tool: CountGivenObject" in view["agent_steps"] and "3 cars" in view["agent_steps"]  # named back in GTA terms
    assert "thought: ask the VQA tool" in view["agent_steps"] and "ObjectCounter" in view["tool_descriptions"]


def test_judge_scores_and_drops_unreadable_and_out_of_range_replies():
    DummyLM(scripted_judge(unreadable={"F_p"}, out_of_range={"C_s"}), name="judge1")
    with dspy.context(lm=build_lm("dummy/judge1"), adapter=dspy.ChatAdapter()):
        judgement = AgentXJudge()(_item("0"), _outcome())
        generative = AgentXJudge()(_item("1", generative=True), _outcome())
    assert judgement.scores == {k: v for k, (_, v) in SCRIPT.items() if k not in ("F_p", "C_s")}
    assert set(judgement.dropped) == {"F_p", "C_s"} and "unreadable reply" in judgement.dropped["F_p"]
    assert "not a number in [0, 1]" in judgement.dropped["C_s"] and judgement.justifications["G_s"] == "judged G_s"
    assert "G_acc" not in generative.scores and "G_acc" not in generative.dropped  # text answers only


def test_aggregation_drops_unreadable_scores_and_takes_g_a_star_over_generative_items():
    details = [
        {"generative": False, "toolset_f1": 1.0, "judge": {"scores": {"G_s": 0.6, "T_p": 0.2, "G_acc": 1.0, "Ts_acc": 1.0}, "dropped": {"F_p": "x"}}},
        {"generative": False, "toolset_f1": 0.0, "judge": {"scores": {"G_s": 0.4, "T_p": 0.4, "G_acc": 0.0, "F_p": 0.5}, "dropped": {"Ts_acc": "x"}}},
        {"generative": True, "toolset_f1": 0.5, "judge": {"scores": {"G_s": 0.2, "T_p": 0.9, "T_acc": 0.6, "Ts_acc": 0.3}, "dropped": {}}},
        {"generative": True, "toolset_f1": 1.0, "judge": {"scores": {"G_s": 0.8, "T_p": 0.5, "T_acc": 0.8, "Ts_acc": 0.7}, "dropped": {"G_acc": "x"}}},
    ]
    figures = aggregate_agentx(details, judge="dummy/judge")
    m = figures.metrics
    assert m["G_s"].value == pytest.approx(0.5) and m["G_s"].n == 4
    assert m["F_p"].value == pytest.approx(0.5) and (m["F_p"].n, m["F_p"].dropped) == (1, 1)  # dropped, not zeroed
    assert m["G_acc"].value == pytest.approx(0.5) and m["G_acc"].n == 2 and m["G_acc"].dropped == 0  # text items only
    # G_a* = mean(T_p, T_acc, Ts_acc) over the generative items = mean(0.7, 0.7, 0.5)
    assert m["G_a*"].value == pytest.approx((0.7 + 0.7 + 0.5) / 3) and m["G_a*"].n == 2
    assert m["Ts_acc"].value == pytest.approx((1.0 + 0.3 + 0.7) / 3) and m["Ts_acc"].dropped == 1
    assert figures.toolset_f1_set.value == pytest.approx(2.5 / 4)
    assert list(m) == ["G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "G_a*", "Ts_acc"]
    assert figures.n_generative == 2 and figures.n_text == 2


def test_without_generative_items_g_a_star_is_null_with_a_reason():
    figures = aggregate_agentx([{"generative": False, "toolset_f1": 1.0, "judge": {"scores": {"T_p": 1.0}, "dropped": {}}}], judge=None)
    assert figures.metrics["G_a*"].value is None and "--generative-ids" in figures.g_a_star_reason


def test_deterministic_toolset_f1():
    item = _item("0")
    assert toolset_f1(item, _outcome(tools=("visualizer",))) == 1.0
    assert toolset_f1(item, _outcome(tools=("visualizer", "ocr"))) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert toolset_f1(item, _outcome(tools=())) == 0.0 and toolset_f1(item, None) == 0.0


def test_judge_calls_land_in_lm_calls_and_items_carry_the_judgement(mmat_home):
    DummyLM(scripted_judge(unreadable={"S_acc"}), name="judge2")
    store = Store.open(mmat_home / "mmat.duckdb")
    try:
        items = [_item("0"), _item("1", generative=True)]
        run_id = "agentx-test-run"
        recorder = LMCallRecorder(store, run_id)
        lm, program = build_lm("dummy/judge2"), AgentXJudge()

        def judge(item, outcome):
            with dspy.context(lm=lm, adapter=dspy.ChatAdapter(), callbacks=[recorder]):
                return program(item, outcome)

        result = run_eval(items, lambda item, s: _outcome(), store=store, bench="agentx", bench_path="data.json",
                          controller="dummy/agent", progress=False, eval_run_id=run_id,
                          scoring=Scoring(judge=judge), judge_model="dummy/judge2")
        ax = result.metrics.agentx
        assert ax.judge == "dummy/judge2" and ax.metrics["S_acc"].dropped == 2 and ax.metrics["S_acc"].value is None
        assert ax.metrics["G_acc"].value == 1.0 and ax.metrics["G_acc"].n == 1
        assert ax.metrics["G_a*"].value == pytest.approx((0.4 + 0.9 + 0.75) / 3)
        modules = [r["module"] for r in store.sql("SELECT module FROM lm_calls WHERE run_id = ?", [run_id])]
        assert len(modules) >= 17 and any("G_s" in (m or "") for m in modules)
        row = store.sql("SELECT details FROM eval_items WHERE eval_run_id = ? AND item_key = '0'", [run_id])[0]
        assert '"G_s": 0.6' in row["details"] and "unreadable reply" in row["details"]
    finally:
        store.close()


def test_a_failed_solve_scores_zero_on_every_judged_metric():
    from mmat.errors import ModelOutputError
    from mmat.eval.results import score_failure

    judge_called = []
    scoring = Scoring(judge=lambda item, outcome: judge_called.append(item) or None)
    failed = score_failure("r", _item("0"), 0, ModelOutputError("no reply"), scoring=scoring)
    assert not judge_called and failed.details["judge"]["scores"]["G_s"] == 0.0 and failed.details["toolset_f1"] == 0.0
    m = aggregate("agentx", [_item("0")], [failed], best_of_n=1, judge="j")
    assert m.agentx.metrics["G_acc"].value == 0.0


def test_a_judge_call_that_fails_after_retries_is_dropped_not_fatal():
    import litellm

    def respond(messages, fields):
        if "grounded" in _system(messages):
            raise litellm.exceptions.RateLimitError("slow down", llm_provider="dummy", model="judge3")
        return {"justification": "ok", "score": 0.5}

    DummyLM(respond, name="judge3")
    with dspy.context(lm=build_lm("dummy/judge3"), adapter=dspy.ChatAdapter()):
        judgement = AgentXJudge()(_item("0"), _outcome())
    assert "judge call failed: " in judgement.dropped["G_s"] and "RateLimitError" in judgement.dropped["G_s"] and judgement.scores["T_p"] == 0.5
