"""StepSampler (forked candidates at each state), StepJudge (typed scores) and the pairing rules."""

import pytest

from mmat.errors import ModelOutputError
from mmat.programs import AgentStep, CodeAgent, StepJudge, StepSampler, agent_messages, preference_pairs
from mmat.programs.prefs import StepCandidates, StepRanking
from mmat.sandbox import Limits
from mmat.testing import DummyLM

ORIGINAL = [AgentStep(idx=0, thought="Set x.", code="x = 40", observation="The code ran and printed nothing."),
            AgentStep(idx=1, thought="Answer.", code="final_answer(x + 2)", observation="Final answer given: 42", final_answer="42")]


def test_sampler_runs_each_candidate_in_a_fork_of_the_original_state(settings, tmp_path, use_lm):
    dm = DummyLM([{"thought": "Break it.", "code": "x = 1/0"}, {"thought": "Other x.", "code": "x = 41"},
                  {"thought": "Answer from x.", "code": "final_answer(x)"},
                  {"thought": "Same as the original.", "code": "final_answer(x  +  2)"}], name="sampler")
    agent = CodeAgent([], settings=settings, limits=Limits(wall_s=20))
    with use_lm("dummy/sampler"):
        samples = StepSampler(agent, k=2)("Make 42.", [], ORIGINAL, tmp_path / "ws", tools=[])
    first, second = samples
    assert first.sources == ["original", "sampled", "sampled"]
    assert [c.error for c in first.candidates] == [None, "ZeroDivisionError: division by zero", None]
    # at the second state x is 40 (the original step was replayed), whatever the forks did
    assert second.sources == ["original", "sampled"]  # the duplicate of the original was skipped
    assert second.candidates[1].final_answer == "40"
    # every candidate was proposed with exactly the agent's prompt at that state
    expected = agent_messages("Make 42.", [], ORIGINAL[:1], [], multimodal=False)
    assert dm.calls[-1].messages == expected


def test_judge_returns_scores_in_candidate_order(settings, use_lm):
    DummyLM([{"judgements": [{"candidate": 1, "score": 0.9, "reason": "uses the file"},
                             {"candidate": 0, "score": 0.2, "reason": "guesses"},
                             {"candidate": 1, "score": 0.1, "reason": "duplicate is ignored"}]}], name="judge1")
    with use_lm("dummy/judge1"):
        ranking = StepJudge()("Make 42.", [], ORIGINAL[:1], ORIGINAL)
    assert ranking.scores == [0.2, 0.9] and ranking.order == [1, 0] and ranking.reasons == ["guesses", "uses the file"]


def test_judge_must_score_every_candidate(settings, use_lm):
    DummyLM([{"judgements": [{"candidate": 0, "score": 0.9, "reason": "ok"}]}], name="judge2")
    with use_lm("dummy/judge2"), pytest.raises(ModelOutputError, match=r"candidate\(s\) \[1\]"):
        StepJudge()("Make 42.", [], [], ORIGINAL)


def cand(code, error=None):
    return AgentStep(idx=0, thought="t", code=code, error=error)


def test_pairs_follow_errors_format_and_margin():
    sample = StepCandidates(step_idx=3, sources=["original", "sampled", "sampled", "sampled"],
                            candidates=[cand("a"), cand("b", "NameError: x"), cand("", "ModelOutputError: bad"), cand("d")])
    ranking = StepRanking(scores=[0.8, 0.9, 0.0, 0.5], reasons=[""] * 4, order=[1, 0, 3, 2])
    pairs = preference_pairs(sample, ranking, min_margin=0.2)
    assert [(p.chosen, p.rejected, p.rule) for p in pairs] == [(0, 1, "error"), (0, 2, "format"), (0, 3, "margin")]
    assert all(p.step_idx == 3 for p in pairs)
    close = StepRanking(scores=[0.8, 0.9, 0.0, 0.7], reasons=[""] * 4, order=[1, 0, 3, 2])
    assert [p.rule for p in preference_pairs(sample, close, min_margin=0.2)] == ["error", "format"]


def test_sampler_k_is_bounded(settings):
    with pytest.raises(ValueError, match="between 1 and 7"):
        StepSampler(CodeAgent([], settings=settings), k=8)
