"""`mmat prefs` on a synthesized store: walks stored as trajectories, pairs by rule with exact contexts,
resume (including a task a kill left half-written), DPO exports."""

import itertools
import json

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.errors import ConfigError
from mmat.lm import adapter_for
from mmat.pipeline.training_data import load_files, load_preference_rows, load_steps
from mmat.pipeline.prefs import PrefsRequest, run_prefs
from mmat.pipeline.synth import SynthRequest, run_synth
from mmat.programs import agent_messages
from mmat.store import open_store
from mmat.testing import DummyLM, scripted
from mmat.testing.scripted import STEPS_PER_TRAJECTORY, VERIFIED_PER_SEED

from .conftest import TOOLS

DIVIDE = {"thought": "Divide to check.", "code": "x = 1 / 0"}
HELLO = {"thought": "Say hello.", "code": "leaked = 'only in this fork'\nprint('hello')"}


def _controller():
    """Per state, k = 3 calls in order: the scripted agent's step (greedy), then two worse alternatives."""
    roles = itertools.cycle(["agent", "divide", "hello"])

    def respond(messages, fields):
        role = next(roles)
        return scripted.agent(messages, fields) if role == "agent" else DIVIDE if role == "divide" else HELLO

    return respond


def _judge(messages, fields):
    cands = json.loads(scripted.field(messages, "candidates"))
    score = {DIVIDE["code"]: 0.0, HELLO["code"]: 0.1}
    return {"judgements": [{"candidate": i, "score": score.get(c["code"], 0.9), "reason": f"r{score.get(c['code'], 0.9)}"}
                           for i, c in enumerate(cands)]}


def test_walks_pairs_resume_and_exports(synth_settings, scripted_models, tmp_path):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    DummyLM(_controller(), name="sampler")
    DummyLM(_judge, name="judge")
    settings = synth_settings.model_copy(update={"controller": "dummy/sampler", "judge": "dummy/judge"})
    summary = run_prefs(settings, PrefsRequest(k=3), progress=False)

    states = VERIFIED_PER_SEED * STEPS_PER_TRAJECTORY
    assert summary.tasks == VERIFIED_PER_SEED and summary.answered == VERIFIED_PER_SEED and summary.failed == 0
    assert summary.states == states and dict(summary.pairs) == {"error": states, "margin": states}
    with open_store(settings, read_only=True) as store:
        walks = store.sql("select * from trajectories where origin = 'prefs' order by traj_id")
        assert len(walks) == VERIFIED_PER_SEED and all(w["run_id"] == summary.run_id and w["status"] == "answered" for w in walks)
        assert store.sql("select count(*) as n from trajectories where origin = 'synth'")[0]["n"] >= VERIFIED_PER_SEED
        pairs = store.sql("select p.*, s.code as walked from preference_pairs p "
                          "join steps s on s.traj_id = p.traj_id and s.idx = p.step_idx order by p.traj_id, step_idx, rule")
        assert len(pairs) == 2 * states and {p["traj_id"] for p in pairs} == {w["traj_id"] for w in walks}
        for p in pairs:
            chosen, rejected = json.loads(p["chosen"]), json.loads(p["rejected"])
            assert chosen["code"] == p["walked"] and p["chosen_score"] == 0.9  # the walk went on with the winner
            # the verified step won (the greedy sample repeating it was dropped); the others were sampled
            assert (chosen["source"], rejected["source"]) == ("reference", "sampled")
            assert json.loads(p["reasons"]) == {"chosen": "r0.9", "rejected": f"r{p['rejected_score']}"}
            if p["rule"] == "error":
                assert rejected["code"] == DIVIDE["code"] and rejected["error"].startswith("ZeroDivisionError")
            else:
                assert rejected["code"] == HELLO["code"] and p["rejected_score"] == 0.1
        # forks are isolated: the variable set in a fork never reached the walk's next state
        assert all("only in this fork" not in r["observation"] for r in store.sql("select observation from steps"))

        # a pair's prompt is the walk's steps before it, rendered as the agent saw them
        rows, _ = load_preference_rows(store, "p.step_idx = 1", model="dummy/sampler")
        assert len(rows) == 2 * VERIFIED_PER_SEED
        pair = store.sql("select p.*, k.query from preference_pairs p join tasks k using (task_id) where pair_id = ?",
                         [rows[0].meta["pair_id"]])[0]
        assert rows[0].prompt == agent_messages(pair["query"], load_files(store, pair["task_id"]),
                                                load_steps(store, pair["traj_id"])[:1], TOOLS, adapter_for("dummy/sampler"),
                                                multimodal=False, inline_images=False)

    again = run_prefs(settings, PrefsRequest(k=3), progress=False)
    assert again.done_before == VERIFIED_PER_SEED and again.states == 0

    for fmt, name in [("llamafactory", "mmat_dpo.json"), ("swift", "mmat_dpo.jsonl")]:
        result = CliRunner().invoke(cli, ["export", fmt, "--pairs", "--out", str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"selected {2 * states} preference pair(s)")
        assert f"wrote {2 * states} row(s)" in result.output
        assert (tmp_path / fmt / name).is_file()


def test_a_task_a_kill_left_half_written_is_walked_again_from_scratch(synth_settings, scripted_models):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    DummyLM(_controller(), name="sampler")
    DummyLM(_judge, name="judge")
    settings = synth_settings.model_copy(update={"controller": "dummy/sampler", "judge": "dummy/judge"})
    first = run_prefs(settings, PrefsRequest(k=3), progress=False)
    with open_store(settings) as store:  # as if killed after the walk's rows, before its done mark
        walk = store.sql("select traj_id, task_id from trajectories where origin = 'prefs' order by traj_id limit 1")[0]
        store.writer.execute("DELETE FROM prefs_tasks WHERE task_id = ?", [walk["task_id"]])
        store.writer.put("steps", [{"traj_id": walk["traj_id"], "idx": 7, "code": "stale"}])
        store.writer.flush()

    again = run_prefs(settings, PrefsRequest(k=3), progress=False)
    assert again.run_id == first.run_id and again.done_before == VERIFIED_PER_SEED - 1
    assert again.states == STEPS_PER_TRAJECTORY and sum(again.pairs.values()) == 2 * STEPS_PER_TRAJECTORY
    with open_store(settings, read_only=True) as store:
        assert store.sql("select count(*) as n from steps where code = 'stale'")[0]["n"] == 0
        assert store.sql("select count(*) as n from preference_pairs")[0]["n"] == 2 * VERIFIED_PER_SEED * STEPS_PER_TRAJECTORY
        assert store.sql("select count(*) as n from trajectories where origin = 'prefs'")[0]["n"] == VERIFIED_PER_SEED


def test_an_empty_selection_says_how_to_widen_it(synth_settings, scripted_models):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    with pytest.raises(ConfigError, match=r"no task matches --tasks-where \"k.domain = 'nowhere'\".*k.status = 'failed'"):
        run_prefs(synth_settings, PrefsRequest(where="k.domain = 'nowhere'"), progress=False)
    with open_store(synth_settings, read_only=True) as store:
        assert store.sql("select count(*) as n from runs where kind = 'prefs'")[0]["n"] == 0  # no run was started


def test_a_prefs_run_that_crashes_is_marked_failed_with_its_reason(synth_settings, scripted_models, monkeypatch):
    """A bug mid-walk (not the model's failure) stops the run; `mmat runs` shows it failed, not running."""
    import mmat.pipeline.prefs as prefs

    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("pair builder exploded")

    monkeypatch.setattr(prefs, "_pair_rows", broken)
    DummyLM(_controller(), name="sampler")
    DummyLM(_judge, name="judge")
    settings = synth_settings.model_copy(update={"controller": "dummy/sampler", "judge": "dummy/judge"})
    with pytest.raises(RuntimeError, match="pair builder exploded"):
        run_prefs(settings, PrefsRequest(k=3), progress=False)
    with open_store(settings, read_only=True) as store:
        [run] = store.sql("select status, summary from runs where kind = 'prefs'")
    assert run["status"] == "failed"
    assert json.loads(run["summary"])["error"] == "RuntimeError: pair builder exploded"
    listed = CliRunner().invoke(cli, ["runs", "--json"])
    assert listed.exit_code == 0 and any(r["kind"] == "prefs" and r["status"] == "failed" for r in json.loads(listed.output))
