"""Metrics: scores in [0, 1] from mmat's verifiers, feedback GEPA can use, the five-argument protocol."""

import inspect
from pathlib import Path

import dspy
import pytest

from mmat.optimizers.judges import Judge, planned_files
from mmat.optimizers.metrics import (
    agent_metric,
    file_generator_metric,
    near_duplicate_flags,
    query_generator_metric,
    verifier_agreement,
)
from mmat.optimizers.programs import PROGRAMS
from mmat.programs import AgentStep, FileAttempt, FileFailure, FileGenResult, GeneratedFile, QueryGenResult, Trajectory
from mmat.programs.query_generator import SpecRejection
from mmat.signatures.queries import QuerySpec, SeedExample
from mmat.signatures.verify import QueryFileVerdict, TrajectoryVerdict
from mmat.testing import scripted


def ok(result):
    return dspy.Prediction(result=result, error=None)


def spec(query, needs=None, tools=("inspect_file_as_text",)):
    return QuerySpec(query=query, intended_tools=list(tools), expected_answer_type="number",
                     file_needs=needs if needs is not None else [
                         {"modality": "table", "content": "March expenses: rent 950", "name_hint": "march", "format": "csv"}])


# --- verifier agreement --------------------------------------------------------------------------------
def test_verifier_agreement_scores_agreement_and_explains_disagreement():
    gold = dspy.Example(passed=False, label="reject", note="the rent in the file is not the one asked about")
    said_pass = ok(QueryFileVerdict(passed=True, reasons=["files fit"]))
    wrong = verifier_agreement(gold, said_pass)
    assert wrong.score == 0.0
    assert "a person labelled it reject (the rent in the file is not the one asked about)" in wrong.feedback
    assert "files fit" in wrong.feedback
    right = verifier_agreement(dspy.Example(passed=True, label="correct"),
                               ok(TrajectoryVerdict(passed=True, verdict="correct", reasons=[], score=0.9)))
    assert right.score == 1.0 and "label says correct" in right.feedback


def test_an_unreadable_answer_scores_zero_with_the_error_as_feedback():
    failed = dspy.Prediction(result=None, error="verification: the model's answer did not fit the requested fields")
    scored = verifier_agreement(dspy.Example(passed=True), failed)
    assert scored.score == 0.0 and "did not fit the requested fields" in scored.feedback


# --- file generator ------------------------------------------------------------------------------------
def test_file_generator_metric_is_the_share_of_needs_made():
    needs = [{"modality": "table", "content": "rent table", "name_hint": "march", "format": "csv"},
             {"modality": "document", "content": "a lease", "name_hint": "lease", "format": "pdf"}]
    gold = dspy.Example(spec=spec("How much rent is due under the lease?", needs))
    made = GeneratedFile(name="march.csv", path=Path("/x/march.csv"), modality="table", mime="text/csv", source="generated")
    result = FileGenResult(
        files=[made],
        attempts=[FileAttempt(need_index=0, file_name="march.csv", attempt=0, code="x", error="NameError: name 'pd' is not defined"),
                  FileAttempt(need_index=0, file_name="march.csv", attempt=1, code="y"),
                  FileAttempt(need_index=1, file_name="lease.pdf", attempt=0, code="z", error="no %PDF header")],
        failures=[FileFailure(need_index=1, file_name="lease.pdf", reason="no working script after 1 attempts")],
    )
    scored = file_generator_metric(gold, ok(result))
    assert scored.score == 0.5
    assert "1 of 2 files were made" in scored.feedback and "lease.pdf failed: no working script" in scored.feedback
    assert "march.csv needed 2 attempts" in scored.feedback and "NameError" in scored.feedback
    assert file_generator_metric(dspy.Example(spec=spec("Which photo shows the larger dog?", [])), ok(FileGenResult())).score == 1.0


# --- agent ---------------------------------------------------------------------------------------------
@pytest.fixture
def judge(settings, scripted_models):
    return Judge(settings)


def trajectory(answer, status="answered"):
    return Trajectory(steps=[AgentStep(idx=0, thought="read", code="print(1)", observation="1")], answer=answer,
                      status=status, n_errors=0)


@pytest.mark.parametrize("answer, expected, score, says", [
    ("950", "950", 1.0, "matches"),
    ("951", "950", 0.5, "does not match"),  # the scripted verifier accepts any number: half a point
    ("I could not tell", "950", 0.0, "judged the solution incorrect"),
    ("950", None, 1.0, "judged the solution correct"),
])
def test_agent_metric_combines_the_verifier_and_answer_correctness(judge, answer, expected, score, says):
    gold = dspy.Example(task="How much was rent in March?", files=[], tools=["inspect_file_as_text"], expected_answer=expected)
    scored = agent_metric(gold, ok(trajectory(answer)), judge=judge)
    assert scored.score == score and says in scored.feedback


def test_agent_metric_says_when_the_agent_never_answered(judge):
    gold = dspy.Example(task="How much was rent?", files=[], tools=[], expected_answer="950")
    scored = agent_metric(gold, ok(trajectory("unknown", status="fallback")), judge=judge)
    assert scored.score == 0.0 and "never called final_answer: it ran out of steps" in scored.feedback


def test_agent_metric_gives_no_credit_to_what_the_rules_reject(settings):
    from mmat.lm import build_lm
    from mmat.testing import DummyLM

    yes = DummyLM([{"reasons": ["correct"], "verdict": "correct", "score": 1.0}], name="yes", cycle=True)
    judge = Judge(settings, lm=build_lm("dummy/yes", settings=settings, cache=False))
    gold = dspy.Example(task="How much was rent?", files=[], tools=[], expected_answer=None)
    junk = agent_metric(gold, ok(trajectory("Your task is incomplete. " * 16)), judge=judge)
    assert junk.score == 0.0 and "answer_not_degenerate: " in junk.feedback and yes.calls == []
    assert agent_metric(gold, ok(trajectory("950")), judge=judge).score == 1.0 and len(yes.calls) == 1


# --- query generator -------------------------------------------------------------------------------------
def test_planned_files_show_the_verifier_what_each_file_will_hold():
    text = planned_files(spec("How much was rent?", [
        {"modality": "image", "content": "a receipt on a table", "name_hint": "receipt"},
        {"modality": "table", "content": "rent 950", "name_hint": "march", "format": "csv"}]))
    assert "1. receipt.png (image, image/png)\nImage description: a receipt on a table" in text
    assert "2. march.csv (table, text/csv)\nPlanned content: rent 950" in text


@pytest.mark.slow  # the first MiniLM load takes 5-30 s on a busy machine
def test_near_duplicates_of_each_other_and_of_examples_are_named():
    flags = near_duplicate_flags(
        ["How much did I spend on rent in March?", "How much did I spend on rent in March ?",
         "Which planet in this photo has rings?"],
        ["Which planet in this photo has rings?"], 0.95)
    assert flags[0] is None and flags[1] == "nearly repeats request 1" and flags[2].startswith("paraphrases the example")


@pytest.mark.slow  # embeds with MiniLM
def test_query_generator_metric_is_verified_share_minus_a_diversity_penalty(judge):
    good = spec("In the finance budget file, how much was spent on rent in March?")
    vague = spec(f"{scripted.VAGUE} (finance)?")
    result = QueryGenResult(specs=[good, vague], rejected=[SpecRejection(query="Use the ocr tool", reason="names no tool from the offered tools")],
                            n_invalid_tools=1, invalid_tools=["telepathy"])
    example = SeedExample(domain="finance", query="What is the total of this receipt?", tools=["ocr"], files=[], answer_type="number")
    gold = dspy.Example(domain="finance", tools=["inspect_file_as_text"], examples=[example])
    scored = query_generator_metric(gold, ok(result), judge=judge, dedup_threshold=0.95)
    assert scored.score == pytest.approx(1 / 3)
    assert "1 of 3 requests passed the verifier; 0 near-duplicate(s)" in scored.feedback
    assert "rejected it (too vague to check)" in scored.feedback and "telepathy" in scored.feedback
    # the same good request twice: the copy still passes, but costs half its share
    twice = QueryGenResult(specs=[good, good.model_copy(update={"query": good.query + " "})])
    scored = query_generator_metric(gold, ok(twice), judge=judge, dedup_threshold=0.95)
    assert scored.score == pytest.approx(1.0 - 0.5 * 1 / 2) and "nearly repeats request 1" in scored.feedback


def test_query_generator_metric_with_nothing_written(judge):
    scored = query_generator_metric(dspy.Example(examples=[]), ok(QueryGenResult(specs=[])), judge=judge)
    assert scored.score == 0.0 and "No request was written" in scored.feedback


# --- protocol ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_every_bound_metric_takes_gepas_five_arguments(program, settings):
    metric = PROGRAMS[program].metric_for(settings, judge=object())
    inspect.signature(metric).bind(None, None, None, None, None)
