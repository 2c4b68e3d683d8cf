"""Every script in examples/ runs, with the scripted DummyLM world (examples/custom_tool.py: tests/test_plugins.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def world(mmat_home, monkeypatch):
    from mmat.config import load_settings
    from mmat.testing import scripted

    monkeypatch.syspath_prepend(str(EXAMPLES))
    models = scripted.register()
    settings = load_settings(home=mmat_home, teacher="dummy/teacher", verifier="dummy/verifier",
                             controller="dummy/agent", dedup_threshold=0.99, concurrency=1, step_timeout_s=20)
    return settings, models


def test_custom_signature_replaces_the_query_prompt_and_the_run_still_works(world):
    from custom_signature import KitchenQueries, kitchen_synthesis

    from mmat.pool import ImagePool
    from mmat.programs import make_seeds

    settings, models = world
    pool = ImagePool.build_default()
    program = kitchen_synthesis(pool, settings, tools=["inspect_file_as_text"], trajectories_per_task=1)
    assert program.query_generator.generate.signature.instructions == KitchenQueries.instructions
    [seed] = make_seeds(1, tools=["inspect_file_as_text"], rng_seed=0)
    result = program(seed, settings.workspaces_dir / "sig")
    assert result.queries is not None and result.queries.specs
    prompt = models["teacher"].calls[0].messages[0]["content"]
    assert "a home cook would send" in prompt and "Write new requests that a user could send" not in prompt


def test_custom_signature_must_keep_the_fields():
    import dspy

    from mmat.programs import QueryGenerator

    class Other(dspy.Signature):
        """Unrelated."""
        x: str = dspy.InputField()
        y: str = dspy.OutputField()

    with pytest.raises(TypeError, match="subclass of GenerateQueries"):
        QueryGenerator(signature=Other)


def test_two_stage_program_writes_its_results_to_the_store(world):
    import two_stage

    from mmat.store import open_store

    settings, _ = world
    run_id = two_stage.run(settings)
    with open_store(settings, read_only=True) as store:
        tasks = store.sql("select count(*) as n from tasks where run_id = ?", [run_id])[0]["n"]
        trajs = store.sql("select count(*) as n, min(n_steps) as steps from trajectories where run_id = ?", [run_id])[0]
        run = store.sql("select kind, status from runs where run_id = ?", [run_id])[0]
    assert tasks == 2 and trajs["n"] == 2 and trajs["steps"] >= 1
    assert run == {"kind": "two_stage", "status": "done"}


def test_pandas_example_reads_a_store_in_one_call(world):
    import pandas_store

    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.store import read_frame

    settings, _ = world
    run_synth(settings, SynthRequest(tasks=1, tools=["inspect_file_as_text", "visualizer"], trajectories_per_task=1),
              progress=False)
    frame = pandas_store.solved_by_domain(settings)
    assert list(frame.columns) == ["domain", "trajectories", "solved"] and frame["trajectories"].sum() == 2
    assert len(read_frame("trajectories", settings)) == 2
