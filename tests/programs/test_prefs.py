"""StepSampler (forked candidates from one state), StepJudge (typed scores), the pairing rules, and
PreferenceWalk (the trajectory goes on with the judge's winner)."""

import json
from collections import Counter

import dspy
import pytest

from mmat.errors import ModelOutputError
from mmat.lm import build_lm
from mmat.local.schema import extract_schema
from mmat.programs import AgentStep, CodeAgent, PreferenceWalk, StepJudge, StepSampler, agent_messages, preference_pairs
from mmat.programs.prefs import StepCandidates, StepRanking, best_candidate, outcome
from mmat.sandbox import Limits
from mmat.testing import DummyLM
from mmat.testing.scripted import field

STEPS = [AgentStep(idx=0, thought="Set x.", code="x = 40", observation="The code ran and printed nothing."),
         AgentStep(idx=1, thought="Answer.", code="final_answer(x + 2)", observation="Final answer given: 42", final_answer="42")]


def test_candidates_from_one_state_cannot_see_each_other(settings, tmp_path, use_lm):
    dm = DummyLM([{"thought": "Keep a note.", "code": "y = x + 1\nopen('note.txt', 'w').write('fork 0')\nprint(y)"},
                  {"thought": "Look around.", "code": "import os\nprint(x, 'y' in dir(), os.path.exists('note.txt'))"},
                  {"thought": "Same as the first.", "code": "y = x + 1\nopen('note.txt', 'w').write('fork 0')\nprint(y)"}],
                 name="sampler")
    agent = CodeAgent([], settings=settings, limits=Limits(wall_s=20))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with use_lm("dummy/sampler"), agent.open_sandbox(workspace, [], []) as sandbox:
        first = CodeAgent.execute(sandbox, 0, "Set x.", "x = 40", workspace)
        sample = StepSampler(agent, k=3, temperature=0.9)("Make 42.", [], [first], sandbox, tools=[], multimodal=False)
        after = CodeAgent.execute(sandbox, 1, "", "import os\nprint('y' in dir(), os.path.exists('note.txt'))", workspace)
    assert sample.step_idx == 1
    assert len(sample.candidates) == 2  # the third repeated the first
    assert "41" in sample.candidates[0].observation
    assert "40 False False" in sample.candidates[1].observation  # the state after step 0, without fork 0's work
    assert "False False" in after.observation and not (workspace / "note.txt").exists()  # nor did the main state change
    # the first candidate is greedy, the others sampled with their own rollout
    assert [c.params.get("temperature") for c in dm.calls] == [0.0, 0.9, 0.9]
    assert all(c.messages == agent_messages("Make 42.", [], [first], [], multimodal=False) for c in dm.calls)


def test_judge_returns_scores_in_candidate_order(settings, use_lm):
    DummyLM([{"judgements": [{"candidate": 1, "score": 0.9, "reason": "uses the file"},
                             {"candidate": 0, "score": 0.2, "reason": "guesses"},
                             {"candidate": 1, "score": 0.1, "reason": "duplicate is ignored"}]}], name="judge1")
    with use_lm("dummy/judge1"):
        ranking = StepJudge()("Make 42.", [], STEPS[:1], STEPS)
    assert ranking.scores == [0.2, 0.9] and ranking.order == [1, 0] and ranking.reasons == ["guesses", "uses the file"]


def test_judge_must_score_every_candidate(settings, use_lm):
    DummyLM([{"judgements": [{"candidate": 0, "score": 0.9, "reason": "ok"}]}], name="judge2")
    with use_lm("dummy/judge2"), pytest.raises(ModelOutputError, match=r"candidate\(s\) \[1\]"):
        StepJudge()("Make 42.", [], [], STEPS)


def test_a_schema_constrained_judge_is_asked_for_one_field_per_candidate(settings, use_lm):
    dm = DummyLM([{"judgements": {"candidate_0": {"score": 0.3, "reason": "sets up"},
                                  "candidate_1": {"score": 0.8, "reason": "answers"}}}], name="judge3")
    with use_lm("dummy/judge3", adapter=dspy.JSONAdapter(use_native_function_calling=False)):
        ranking = StepJudge()("Make 42.", [], [], STEPS)
    assert ranking.scores == [0.3, 0.8] and ranking.order == [1, 0] and ranking.reasons == ["sets up", "answers"]
    schema = extract_schema(dm.calls[0].response_format)
    judgements = schema["$defs"][schema["properties"]["judgements"]["$ref"].split("/")[-1]]
    assert judgements["required"] == ["candidate_0", "candidate_1"]


def cand(code, error=None):
    return AgentStep(idx=0, thought="t", code=code, error=error)


def test_pairs_follow_errors_format_and_margin():
    sample = StepCandidates(step_idx=3, sources=["sampled"] * 6, candidates=[
        cand("a"), cand("b", "NameError: x"), cand("", "ModelOutputError: bad"), cand("d"), cand("e"), cand("f")])
    ranking = StepRanking.from_scores([0.7, 0.9, 0.0, 0.5, 0.6, 0.4], [""] * 6)
    pairs = preference_pairs(sample, ranking, min_margin=0.2)
    # the erroring b scored highest, yet the chosen side is the best candidate that ran: a; e is only 0.1 worse
    assert [(p.chosen, p.rejected, p.rule) for p in pairs] == [(0, 1, "error"), (0, 2, "format"), (0, 3, "margin"), (0, 5, "margin")]
    assert all(p.step_idx == 3 for p in pairs) and pairs[2].chosen_score == 0.7 and pairs[2].rejected_score == 0.5
    assert [(p.rejected, p.rule) for p in preference_pairs(sample, ranking, min_margin=0.25)] == [(1, "error"), (2, "format"), (5, "margin")]


def test_without_a_clean_candidate_python_that_raised_still_beats_what_is_not_python():
    sample = StepCandidates(step_idx=0, sources=["sampled"] * 4, candidates=[
        cand("The answer is in the image.", "SyntaxError: invalid syntax (<step 0>, line 1)"),
        cand("x = undefined", "NameError: name 'undefined' is not defined"),
        cand("y = 1 / 0", "ZeroDivisionError: division by zero"), cand("", "ModelOutputError: bad")])
    ranking = StepRanking.from_scores([0.9, 0.2, 0.5, 0.1], [""] * 4)
    assert [outcome(c) for c in sample.candidates] == ["format", "error", "error", "format"]
    assert best_candidate(sample.candidates, ranking) == 2  # the judge's best among the Python that ran
    assert [(p.chosen, p.rejected, p.rule) for p in preference_pairs(sample, ranking)] == [(2, 0, "format"), (2, 3, "format")]
    prose_only = StepCandidates(step_idx=0, sources=["sampled"] * 2, candidates=[sample.candidates[0], sample.candidates[3]])
    assert preference_pairs(prose_only, StepRanking.from_scores([0.9, 0.1], ["", ""])) == []


def test_sampler_k_is_bounded(settings):
    with pytest.raises(ValueError, match="between 1 and 7"):
        StepSampler(CodeAgent([], settings=settings), k=8)


def _scripted_controller(by_state: dict[int, list[dict]]):
    """Candidates per state, in call order (greedy first); the state is the number of earlier steps."""
    calls: Counter[int] = Counter()

    def respond(messages, fields):
        if fields == ["answer"]:
            return {"answer": "unknown"}
        state = sum(m["role"] == "assistant" for m in messages)
        options = by_state[state]
        calls[state] += 1
        return options[(calls[state] - 1) % len(options)]

    return respond


def _judge_by(scores_by_code: dict[str, float], seen: list[str]):
    def respond(messages, fields):
        seen.append(field(messages, "steps_so_far"))
        cands = json.loads(field(messages, "candidates"))
        return {"judgements": [{"candidate": i, "score": scores_by_code.get(c["code"], 0.3), "reason": f"about {c['code']}"}
                               for i, c in enumerate(cands)]}

    return respond


def test_the_walk_goes_on_with_the_winner_and_pairs_every_state(settings, tmp_path, use_lm):
    DummyLM(_scripted_controller({
        0: [{"thought": "Start at 40.", "code": "x = 40"}, {"thought": "Divide.", "code": "x = 1 / 0"},
            {"thought": "Start at 41.", "code": "x = 41"}],
        1: [{"thought": "Answer.", "code": "final_answer(x + 1)"}, {"thought": "Answer x.", "code": "final_answer(x)"}],
    }), name="walker")
    judged: list[str] = []
    judge_lm = DummyLM(_judge_by({"x = 41": 0.9, "x = 40": 0.5, "x = 1 / 0": 0.0, "final_answer(x + 1)": 0.9}, judged), name="walkjudge")
    agent = CodeAgent([], settings=settings, limits=Limits(wall_s=20))
    walk = PreferenceWalk(agent, k=3, min_margin=0.2,
                          judge_context={"lm": build_lm(judge_lm.model, settings=settings, cache=False)})
    with use_lm("dummy/walker"):
        result = walk("Make 42.", [], tmp_path / "ws", tools=[])

    traj = result.trajectory
    assert [s.code for s in traj.steps] == ["x = 41", "final_answer(x + 1)"]  # the winners, not the greedy 40
    assert traj.status == "answered" and traj.answer == "42"  # the main sandbox ran x = 41
    assert [s.winner for s in result.states] == [2, 0]
    assert "x = 41" in judged[1] and "x = 40" not in judged[1]  # the judge saw the walk's own history
    assert all(c.params.get("temperature") == 0.0 for c in judge_lm.calls)  # judged greedily
    rules = [[(st.candidates[p.chosen].code, st.candidates[p.rejected].code, p.rule) for p in st.pairs] for st in result.states]
    assert rules == [[("x = 41", "x = 1 / 0", "error"), ("x = 41", "x = 40", "margin")],
                     [("final_answer(x + 1)", "final_answer(x)", "margin")]]


def test_when_every_candidate_fails_the_walk_follows_the_best_failure_and_the_error_rules(settings, tmp_path, use_lm):
    DummyLM(_scripted_controller({s: [{"thought": "Try.", "code": "y = undefined_name"}, {"thought": "Divide.", "code": "x = 1 / 0"}]
                                  for s in range(3)}), name="failing")
    seen: list[str] = []
    DummyLM(_judge_by({"x = 1 / 0": 0.4, "y = undefined_name": 0.1}, seen), name="failjudge")
    agent = CodeAgent([], settings=settings, limits=Limits(wall_s=20), error_tolerance=1)
    walk = PreferenceWalk(agent, k=2, judge_context={"lm": build_lm("dummy/failjudge", settings=settings, cache=False)})
    with use_lm("dummy/failing"):
        result = walk("Make 42.", [], tmp_path / "ws", tools=[])
    traj = result.trajectory
    assert traj.status == "error_limit" and traj.n_errors == 2 and traj.answer == "unknown"  # tolerance 1: the second error stops it
    assert [s.code for s in traj.steps] == ["x = 1 / 0", "x = 1 / 0"]
    assert all(not st.pairs for st in result.states)  # no clean candidate, nothing to prefer


def test_the_reference_step_competes_only_while_the_walk_follows_it(settings, tmp_path, use_lm):
    DummyLM(_scripted_controller({
        0: [{"thought": "Start at 41.", "code": "x = 41"}, {"thought": "Same as the reference.", "code": "x  =  40"}],
        1: [{"thought": "Answer.", "code": "final_answer(x + 1)"}, {"thought": "Answer x.", "code": "final_answer(x)"}],
    }), name="refwalker")
    DummyLM(_judge_by({"x = 41": 0.9, "x = 40": 0.6, "final_answer(x + 1)": 0.9}, []), name="refjudge")
    agent = CodeAgent([], settings=settings, limits=Limits(wall_s=20))
    walk = PreferenceWalk(agent, k=2, judge_context={"lm": build_lm("dummy/refjudge", settings=settings, cache=False)})
    with use_lm("dummy/refwalker"):
        result = walk("Make 42.", [], tmp_path / "ws", tools=[], reference=STEPS)
    first, second = result.states
    assert first.sources == ["reference", "sampled"]  # the sampled copy of the reference was dropped
    assert [c.code for c in first.candidates] == ["x = 40", "x = 41"] and first.winner == 1
    assert second.sources == ["sampled", "sampled"]  # the walk left the reference: its step 1 is not offered
    assert result.trajectory.answer == "42" and [s.code for s in result.trajectory.steps] == ["x = 41", "final_answer(x + 1)"]
