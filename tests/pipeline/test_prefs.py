"""`mmat prefs` on a synthesized store: pairs by rule, exact context references, resume, DPO exports."""

import itertools
import json

from click.testing import CliRunner

from mmat.cli import cli
from mmat.pipeline.prefs import PrefsRequest, run_prefs
from mmat.pipeline.synth import SynthRequest, run_synth
from mmat.runtime import open_store
from mmat.testing import DummyLM
from mmat.testing.scripted import STEPS_PER_TRAJECTORY, VERIFIED_PER_SEED

from .conftest import TOOLS


def test_pairs_from_forked_candidates(synth_settings, scripted_models, tmp_path):
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    alternatives = itertools.cycle([
        {"thought": "Divide to check.", "code": "x = 1 / 0"},
        {"thought": "Say hello.", "code": "leaked = 'only in this fork'\nprint('hello')"},
    ])
    DummyLM(lambda m, f: next(alternatives), name="sampler")
    DummyLM(lambda m, f: {"judgements": [{"candidate": i, "score": round(0.9 - 0.4 * i, 2), "reason": f"r{i}"} for i in range(3)]},
            name="judge")
    settings = synth_settings.model_copy(update={"controller": "dummy/sampler", "judge": "dummy/judge"})
    summary = run_prefs(settings, PrefsRequest(k=2), progress=False)

    states = VERIFIED_PER_SEED * STEPS_PER_TRAJECTORY
    assert summary.states == states and summary.failed == 0
    assert dict(summary.pairs) == {"error": states, "margin": states}
    with open_store(settings, read_only=True) as store:
        pairs = store.sql("select p.*, s.code as original from preference_pairs p "
                          "join steps s on s.traj_id = p.traj_id and s.idx = p.step_idx order by rule")
        assert len(pairs) == 2 * states
        for p in pairs:
            chosen, rejected = json.loads(p["chosen"]), json.loads(p["rejected"])
            assert chosen["code"] == p["original"] and p["chosen_score"] == 0.9  # the verified step wins
            assert json.loads(p["reasons"])["chosen"] == "r0"
            if p["rule"] == "error":
                assert rejected["code"] == "x = 1 / 0" and rejected["error"].startswith("ZeroDivisionError")
            else:
                assert rejected["code"].startswith("leaked") and p["rejected_score"] == 0.1
        # forks are isolated: the variable set in a fork never reached the trajectory's next state
        later = store.sql("select observation from steps where idx = 1")
        assert all("only in this fork" not in r["observation"] for r in later)

    again = run_prefs(settings, PrefsRequest(k=2), progress=False)
    assert again.done_before == VERIFIED_PER_SEED and again.states == 0

    for fmt, name in [("llamafactory", "mmat_dpo.json"), ("swift", "mmat_dpo.jsonl")]:
        result = CliRunner().invoke(cli, ["export", fmt, "--pairs", "--out", str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"wrote {2 * states} pair(s)")
        assert (tmp_path / fmt / name).is_file()
