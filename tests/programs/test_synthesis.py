"""Synthesis end to end with scripted teacher, verifier and controller models."""

import re

import pytest

from mmat.programs import Synthesis
from mmat.programs.seeds import make_seed
from mmat.sandbox import Limits
from mmat.testing import DummyLM

TOOLS = ["inspect_file_as_text", "visualizer"]


def field(messages, name):
    text = "".join(p.get("text", "") for p in messages[-1]["content"]) if isinstance(messages[-1]["content"], list) else messages[-1]["content"]
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n\[\[|\n\nRespond|$)", text, re.S)
    return match.group(1) if match else None


SPECS = [
    {"query": "How much was the rent in March, and what is shown in this photo?", "intended_tools": ["inspect_file_as_text", "visualizer"],
     "file_needs": [{"modality": "image", "content": "an astronaut in an orange space suit", "name_hint": "crew"},
                    {"modality": "table", "content": "March expenses: rent 950, food 412.5", "name_hint": "march", "format": "csv"}],
     "expected_answer_type": "number", "expected_answer": "950"},
    {"query": "Ignore this one: it is a vague request about the log?", "intended_tools": ["inspect_file_as_text"],
     "file_needs": [{"modality": "text", "content": "a short log", "name_hint": "server", "format": "log"}],
     "expected_answer_type": "short_text", "expected_answer": None},
    {"query": "How much was the rent in March?", "intended_tools": ["inspect_file_as_text"], "file_needs": [],
     "expected_answer_type": "number", "expected_answer": "950"},
]


@pytest.fixture
def models():
    def teacher(messages, fields):
        if fields == ["queries"]:
            return {"queries": SPECS}
        name = field(messages, "file_name")
        rows = "category,amount\\nrent,950\\nfood,412.5\\n" if name.endswith(".csv") else "INFO start\\nERROR disk full\\n"
        return {"code": f"open({name!r}, 'w').write('{rows}')"}

    def verifier(messages, fields):
        if "passed" in fields:
            vague = "Ignore this one" in field(messages, "query")
            return {"reasons": ["vague"] if vague else ["files fit"], "passed": not vague, "rewritten_query": None}
        right = field(messages, "answer") == "950"
        return {"reasons": ["matches"], "verdict": "correct" if right else "incorrect", "score": 0.9 if right else 0.2}

    def agent(messages, fields):
        return {"thought": "Read the table.", "code": "print(inspect_file_as_text('march.csv'))\nimport csv\nrows = {r['category']: r['amount'] for r in csv.DictReader(open('march.csv'))}\nfinal_answer(rows['rent'])"}

    return DummyLM(teacher, name="teacher"), DummyLM(verifier, name="verifier"), DummyLM(agent, name="agent")


def test_one_seed_through_every_stage(settings, small_pool, models, tmp_path):
    teacher, verifier, controller = models
    seen = []

    def dedup(queries):
        seen.append(queries)
        return [q == "How much was the rent in March?" for q in queries]

    synthesis = Synthesis(small_pool, settings=settings, tools=TOOLS, n_queries=3, trajectories_per_task=2, dedup=dedup,
                          limits=Limits(wall_s=20))
    result = synthesis(make_seed(0, tools=TOOLS), tmp_path / "seed0")

    assert result.error is None and len(result.queries.specs) == 3
    assert seen == [[s["query"] for s in SPECS]]
    assert [d.query for d in result.duplicates] == ["How much was the rent in March?"]
    solved, rejected = result.tasks
    assert solved.status == "solved" and solved.status_reason is None
    assert [f.name for f in solved.files.files] == ["crew.png", "march.csv"]
    assert solved.files.files[0].source == "pool" and "astronaut" in solved.files.files[0].caption
    assert [t.attempt for t in solved.trajectories] == [0, 1]
    assert all(t.trajectory.answer == "950" and t.verdict.passed and t.controller == "dummy/agent" for t in solved.trajectories)
    assert (solved.workspace / "traj_0" / "march.csv").exists() and (solved.workspace / "traj_1" / "march.csv").exists()
    assert rejected.status == "rejected" and rejected.status_reason == "query-file verifier: vague"
    assert rejected.trajectories == [] and rejected.files.ok
    # each role ran on its own model; trajectories were sampled with the run's temperature
    assert len(controller.calls) == 2 and all(c.params.get("temperature") == 0.7 for c in controller.calls)
    # two query-file checks and one trajectory check: both trajectories are identical, so DSPy's cache
    # answers the second verification (the agent's samples differ by rollout_id and are never cached)
    assert len(verifier.calls) == 3
    assert len(teacher.calls) == 3  # queries, march.csv, server.log


def test_unreadable_queries_end_the_seed_with_an_error(settings, small_pool, tmp_path):
    DummyLM([{"queries": "none today"}], name="teacher", cycle=True)
    result = Synthesis(small_pool, settings=settings, tools=TOOLS)(make_seed(1, tools=TOOLS), tmp_path)
    assert result.tasks == [] and "query generation" in result.error


def test_failed_files_reject_the_task_before_any_verification(settings, small_pool, tmp_path):
    def teacher(messages, fields):
        if fields == ["queries"]:
            return {"queries": [SPECS[1]]}
        return {"code": "raise RuntimeError('disk quota')"}

    DummyLM(teacher, name="teacher")
    verifier = DummyLM([{"reasons": [], "passed": True, "rewritten_query": None}], name="verifier")
    result = Synthesis(small_pool, settings=settings, tools=TOOLS, solve=False, limits=Limits(wall_s=20))(
        make_seed(2, tools=TOOLS), tmp_path)
    [task] = result.tasks
    assert task.status == "rejected" and task.status_reason.startswith("files: server.log: no working script after 4 attempts")
    assert verifier.calls == []


def test_rewritten_query_is_what_the_agent_gets(settings, small_pool, tmp_path):
    DummyLM(lambda m, f: {"queries": [SPECS[2]]}, name="teacher")
    DummyLM([{"reasons": ["clearer"], "passed": True, "rewritten_query": "What was March's rent?"}], name="verifier")
    result = Synthesis(small_pool, settings=settings, tools=TOOLS, solve=False)(make_seed(3, tools=TOOLS), tmp_path)
    [task] = result.tasks
    assert task.status == "verified" and task.query == "What was March's rent?" and task.spec.query == SPECS[2]["query"]


def test_a_rewrite_that_fails_the_rules_is_not_what_the_agent_gets(settings, small_pool, tmp_path):
    DummyLM(lambda m, f: {"queries": [SPECS[2]]}, name="teacher")
    DummyLM([{"reasons": ["ok"], "passed": True, "rewritten_query": "inspect_file_as_text"}], name="verifier")
    result = Synthesis(small_pool, settings=settings, tools=TOOLS, solve=False)(make_seed(3, tools=TOOLS), tmp_path)
    [task] = result.tasks
    assert task.status == "verified" and task.query == SPECS[2]["query"]
    assert task.query_verdict.rewritten_query == "inspect_file_as_text"  # still on record


def test_a_trajectory_whose_every_step_failed_never_reaches_the_verifier(settings, small_pool, tmp_path):
    DummyLM(lambda m, f: {"queries": [SPECS[2]]}, name="teacher")
    verifier = DummyLM([{"reasons": ["fine"], "passed": True, "rewritten_query": None},
                        {"reasons": ["looks right"], "verdict": "correct", "score": 1.0}], name="verifier")
    DummyLM(lambda m, f: {"answer": "950"} if f == ["answer"] else {"thought": "Try.", "code": "this is not python"},
            name="agent")
    result = Synthesis(small_pool, settings=settings, tools=TOOLS, limits=Limits(wall_s=20))(make_seed(4, tools=TOOLS), tmp_path)
    [task] = result.tasks
    [run] = task.trajectories
    assert run.verdict is None and run.rejected_by_rules and not run.correct
    assert "not_all_steps_failed: every one of the 4 step(s) failed" in run.rules.reasons
    assert task.status == "failed" and task.status_reason.endswith("(1 rejected by the rules)")
    assert len(verifier.calls) == 1  # the query-file check only
