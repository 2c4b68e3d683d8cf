"""Every LM call of a synth run names its seed, task, trajectory and step; the views answer per-task questions."""

import pytest

from mmat.pipeline.synth import SynthRequest, run_synth
from mmat.store import open_store
from mmat.store.reasons import reason_code
from mmat.testing.scripted import STEPS_PER_TRAJECTORY, VERIFIED_PER_SEED

from .conftest import TOOLS


@pytest.fixture
def synth_store(synth_settings, scripted_models):
    summary = run_synth(synth_settings, SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=2), progress=False)
    with open_store(synth_settings, read_only=True) as store:
        yield store, summary


def test_no_synth_call_lacks_its_task_or_seed(synth_store):
    store, summary = synth_store
    by_task = store.sql("select task_id, sum(cost) cost, count(*) n from lm_calls where run_id = ? group by 1", [summary.run_id])
    assert [r for r in by_task if r["task_id"] is None] == []  # the check: no NULL task for synth calls
    # the seed-level call (query generation, one per seed, made before any task id exists) names its seed and,
    # once the seed is written, the seed's first task (the smallest task_id)
    seed_level = store.sql("""select c.seed_idx, c.task_id, (select min(task_id) from tasks k where k.run_id = c.run_id
                              and k.seed_idx = c.seed_idx) first_task from lm_calls c where c.seed_call order by 1""")
    assert [r["seed_idx"] for r in seed_level] == [0, 1]
    assert all(r["task_id"] == r["first_task"] is not None for r in seed_level)
    assert store.sql("select count(*) n from lm_calls where task_id is null or seed_idx is null")[0]["n"] == 0
    # every attributed task id is a stored task, every trajectory id a stored trajectory
    assert store.sql("select count(*) n from lm_calls c anti join tasks k using (task_id) where c.task_id is not null")[0]["n"] == 0
    assert store.sql("select count(*) n from lm_calls c anti join trajectories t using (traj_id) where c.traj_id is not null")[0]["n"] == 0


def test_agent_calls_name_their_trajectory_and_step(synth_store):
    store, _ = synth_store
    steps = store.sql("""select c.traj_id, c.step_idx from lm_calls c where c.model = 'dummy/agent' and c.step_idx is not null
                         order by 1, 2""")
    per_traj = {}
    for r in steps:
        per_traj.setdefault(r["traj_id"], []).append(r["step_idx"])
    assert len(per_traj) == 2 * VERIFIED_PER_SEED * 2
    assert all(v == list(range(STEPS_PER_TRAJECTORY)) for v in per_traj.values())
    # the trajectory verifier's call is the trajectory's too, without a step
    verifier = store.sql("select count(*) n from lm_calls where model = 'dummy/verifier' and traj_id is not null and step_idx is null")
    assert verifier[0]["n"] == len(per_traj)


def test_tools_offered_used_multimodal_and_reason_codes(synth_store):
    store, _ = synth_store
    trajs = store.sql("select tools_offered, tools_used from trajectories")
    assert all(sorted(t["tools_offered"]) == sorted(TOOLS) for t in trajs)
    assert all(t["tools_used"] and set(t["tools_used"]) <= set(TOOLS) for t in trajs)
    mm = {r["multimodal"]: r["n"] for r in store.sql(
        "select k.multimodal, count(*) n from tasks k where k.status = 'solved' group by 1")}
    with_images = store.sql("select count(distinct task_id) n from files where modality = 'image'")[0]["n"]
    assert mm.get(True) == with_images > 0
    codes = store.sql("select reason_code, count(*) n from tasks where status = 'rejected' group by 1")
    assert codes == [{"reason_code": "verifier_rejected", "n": 2}]


def test_views_tool_calls_costs_and_funnel(synth_store):
    store, summary = synth_store
    calls = store.sql("select name, count(*) n from tool_calls group by 1 order by 1")
    total = store.sql("select sum(len(tool_calls)) n from steps")[0]["n"]
    assert sum(r["n"] for r in calls) == total and {r["name"] for r in calls} <= set(TOOLS)
    costs = store.sql("select sum(calls) calls, sum(seed_share_prompt_tokens) shared from task_costs")[0]
    direct = store.sql("select count(*) n from lm_calls where task_id is not null and not seed_call")[0]["n"]
    assert costs["calls"] == direct  # a task's own calls; the seed's call is shared, not the first task's own
    seed_tokens = store.sql("select sum(prompt_tokens) n from lm_calls where seed_call")[0]["n"]
    assert seed_tokens > 0 and costs["shared"] == pytest.approx(seed_tokens)  # spread evenly over the seed's tasks
    traj_calls = store.sql("select sum(calls) n from trajectory_costs")[0]["n"]
    assert traj_calls == store.sql("select count(*) n from lm_calls where traj_id is not null")[0]["n"]
    funnel = store.sql("select * from stage_funnel where run_id = ?", [summary.run_id])[0]
    assert funnel["seeds"] == 2 and funnel["solved"] == 2 * VERIFIED_PER_SEED
    assert funnel["specs"] >= funnel["generated"] >= funnel["files_ok"] >= funnel["verified"] >= funnel["solved"]
    assert funnel["trajectories"] == funnel["trajectories_correct"] == 2 * VERIFIED_PER_SEED * 2


@pytest.mark.parametrize("status, reason, code", [
    ("rejected", "files: a.png: the image pool has no unused image", "files_failed"),
    ("rejected", "rules: answer_type: ...", "rules_rejected"),
    ("failed", "query-file verifier: unreadable reply", "verifier_error"),
    ("rejected", "query-file verifier: too vague", "verifier_rejected"),
    ("failed", "none of 2 trajectories was verified correct", "no_verified_trajectory"),
    ("rejected", "near-duplicate of an earlier query", "near_duplicate"),
    ("rejected", "something new", "other"),
    ("solved", None, None),
])
def test_reason_codes(status, reason, code):
    assert reason_code(status, reason) == code
