"""The labelled set end to end through Synthesis, with verifier models that say 'correct' to everything:
whatever the model says, the rules must reject the bad half and keep the good half."""

from __future__ import annotations

from collections import Counter

import pytest

from mmat.programs import Synthesis
from mmat.testing import DummyLM
from mmat.testing.labelled_set import ALWAYS_CAUGHT, build_labelled_set, rule_figures, run_case


def says_yes(messages, fields):
    if "passed" in fields and "verdict" not in fields:
        return {"reasons": ["looks good"], "passed": True, "rewritten_query": None}
    return {"reasons": ["correct"], "verdict": "correct", "score": 1.0}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return build_labelled_set(tmp_path_factory.mktemp("labelled"))


@pytest.fixture
def outcomes(settings, cases):
    verifier = DummyLM(says_yes, name="verifier", cycle=True)
    program = Synthesis(None, settings=settings, tools=[])
    results = [run_case(program, case) for case in cases]
    return results, verifier


def test_the_set_is_big_and_about_half_good(cases):
    kinds = Counter(c.kind for c in cases)
    assert len(cases) >= 40 and 0.4 <= kinds["good"] / len(cases) <= 0.6
    assert {"fallback", "no_final_answer", "degenerate", "wrong_tool", "contradicts_files", "wrong_number"} <= set(kinds)


def test_a_yes_saying_verifier_keeps_only_the_good_half(outcomes):
    results, verifier = outcomes
    for o in results:
        if o.case.good:
            assert o.correct and not o.rejected_by_rules, (o.case.name, o.reasons)
        elif o.case.catchable:
            assert o.rejected_by_rules and not o.correct, o.case.name
        else:  # only a verifier that reads the file can see these; this one says yes, so they get through
            assert o.correct, o.case.name
    # what the rules rejected never reached the model (answers shared with a case that passed aside)
    seen = [str(c.messages[-1]["content"]) for c in verifier.calls if "verdict" in c.output_fields]
    kept = {o.case.trajectory.answer for o in results if not o.rejected_by_rules}
    hidden = {o.case.trajectory.answer for o in results if o.rejected_by_rules} - kept - {None, ""}
    assert hidden and not [a for a in hidden if any(f"[[ ## answer ## ]]\n{a}\n" in text for text in seen)]
    assert any("[[ ## answer ## ]]\n950\n" in text for text in seen)


def test_every_fallback_degenerate_and_unanswered_case_is_caught(outcomes):
    results, _ = outcomes
    missed = [o.case.name for o in results if o.case.kind in ALWAYS_CAUGHT and not o.rejected_by_rules]
    assert missed == []
    figures = rule_figures(results)
    assert figures["precision"] >= 0.95 and figures["recall_fallback_degenerate_no_answer"] == 1.0


def test_reasons_name_the_check_that_failed(outcomes):
    results, _ = outcomes
    by_name = {o.case.name: o.reasons for o in results}
    assert any(r.startswith("final_answer_called: ") for r in by_name["fallback, the demo store's case"])
    assert any(r.startswith("answer_not_degenerate: ") for r in by_name["fallback, the demo store's case"])
    assert by_name["wrong tool: visualizer for OCR"] == (
        "intended_tool_called: none of the intended tools (ocr) was called; it called visualizer",)
    assert by_name["task: 'both photos' with one attached"] == (
        "files_attached: the query refers to 2 image(s) but 1 is attached",)
