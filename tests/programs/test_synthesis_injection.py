"""Synthesis takes its stages and its role LMs as arguments; an unknown role is refused."""

from __future__ import annotations

import pytest

from mmat.config import load_settings
from mmat.lm import build_lm
from mmat.pool import ImagePool
from mmat.programs import CodeAgent, Synthesis, make_seeds
from mmat.testing import scripted


def test_role_lms_passed_in_are_used_instead_of_the_settings_models(mmat_home):
    scripted.register()
    settings = load_settings(home=mmat_home, teacher="dummy/never-registered", verifier="dummy/never-registered",
                             controller="dummy/never-registered", dedup_threshold=0.99, step_timeout_s=20)
    lms = {role: build_lm(f"dummy/{name}", settings=settings)
           for role, name in (("teacher", "teacher"), ("controller", "agent"), ("verifier", "verifier"))}
    agent = CodeAgent(["inspect_file_as_text"], settings=settings, max_steps=3)
    program = Synthesis(ImagePool.build_default(), settings=settings, tools=["inspect_file_as_text"],
                        trajectories_per_task=1, agent=agent, lms=lms)
    assert program.agent is agent and program.role_model("controller") == "dummy/agent"
    [seed] = make_seeds(1, tools=["inspect_file_as_text"], rng_seed=0)
    result = program(seed, mmat_home / "ws")
    solved = [t for t in result.tasks if t.trajectories]
    assert solved and all(r.controller == "dummy/agent" for t in solved for r in t.trajectories)


def test_an_unknown_role_is_refused(mmat_home):
    with pytest.raises(ValueError, match="unknown role\\(s\\) judge in lms: the roles are teacher, controller, verifier"):
        Synthesis(None, settings=load_settings(home=mmat_home), lms={"judge": object()})
