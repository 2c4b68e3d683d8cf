"""`mmat synth --executor ray` on a local Ray instance (2 CPUs, loopback, no dashboard): the same rows as a
local run, resume without duplicates, and a worker that dies mid-seed is retried."""

from __future__ import annotations

import os

import pytest

from mmat.pipeline.ray_executor import ray_available

from .conftest import TOOLS

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ray_available(), reason="ray is not installed (mmat[ray])")]

TABLES = ("tasks", "files", "trajectories", "steps", "verdicts", "query_embeddings", "synth_seeds")


_worker_tmp: list = []


def _mounts_under(folder) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if p.startswith(str(folder))]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    die_dir = tmp_path_factory.mktemp("die_once")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only (see RayExecutor)
    import ray

    # the workers' temp dir is this module's own: the warm pools' quota staging mounts show up there
    _worker_tmp.append(tmp_path_factory.mktemp("ray_worker_tmp"))
    env = {"MMAT_PLUGINS": "mmat.testing.ray_world:register", "MMAT_TEST_DIE_ONCE": str(die_dir),
           "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "TMPDIR": str(_worker_tmp[0])}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": env})
    yield die_dir
    ray.shutdown()


def _counts(settings) -> dict[str, int]:
    from mmat.store import open_store

    with open_store(settings, read_only=True) as store:
        return {t: store.sql(f"select count(*) as n from {t}")[0]["n"] for t in TABLES} | {
            "lm_calls": store.sql("select count(*) as n from lm_calls where run_id is not null")[0]["n"]}


def _settings(home):
    from mmat.config import load_settings

    return load_settings(home=home, teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                         dedup_threshold=0.99, concurrency=2, step_timeout_s=20)


def test_ray_run_writes_what_a_local_run_writes_and_resumes(ray_local, tmp_path, scripted_models):
    from mmat.pipeline.synth import SynthRequest, run_synth

    request = SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=1)
    local = _settings(tmp_path / "local")
    run_synth(local, request, progress=False)
    remote = _settings(tmp_path / "ray")
    summary = run_synth(remote, request.model_copy(update={"executor": "ray", "workers": 2}), progress=False)
    assert summary.seeds_run == 2 and summary.exit_code == 0
    assert _counts(remote) == _counts(local)

    again = run_synth(remote, request.model_copy(update={"executor": "ray", "workers": 2}), progress=False)
    assert again.seeds_done_before == 2 and again.seeds_run == 0
    assert _counts(remote) == _counts(local)
    # the workers closed their warm sandboxes before Ray killed them (and their quota keepers with them)
    assert _mounts_under(_worker_tmp[0]) == []


def test_a_worker_that_dies_mid_seed_is_retried_and_nothing_is_duplicated(ray_local, tmp_path, scripted_models):
    from mmat.pipeline.synth import SynthRequest, run_synth

    (ray_local / "die").write_text("once")
    settings = _settings(tmp_path / "dying")
    summary = run_synth(settings, SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=1, executor="ray",
                                               workers=2), progress=False)
    assert (ray_local / "died").exists()  # a worker process did exit mid-seed
    assert summary.seeds_run == 2 and summary.seeds_failed == 0
    local = _settings(tmp_path / "reference")
    run_synth(local, SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=1), progress=False)
    counts, expected = _counts(settings), _counts(local)
    assert {t: counts[t] for t in TABLES} == {t: expected[t] for t in TABLES}


def test_ray_workers_use_the_output_mode_the_driver_resolved_for_a_server(ray_local, tmp_path, monkeypatch):
    """The server's address is in the settings only (no environment variable reaches the workers) and the
    output mode is probed: the workers must take the driver's resolution, not probe again without it."""
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.structured import forget
    from mmat.testing.fault_server import FaultServer

    for var in ("HOSTED_VLLM_API_BASE", "MMAT_API_BASE", "MMAT_STRUCTURED_OUTPUT"):
        monkeypatch.delenv(var, raising=False)
    forget()
    with FaultServer() as server:
        settings = load_settings(home=tmp_path / "home", teacher="hosted_vllm/teacher", verifier="hosted_vllm/verifier",
                                 controller="hosted_vllm/agent", api_base=server.api_base, structured_output="auto",
                                 dedup_threshold=0.99, concurrency=2, num_retries=0, step_timeout_s=20)
        request = SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=1, executor="ray", workers=2)
        summary = run_synth(settings, request, progress=False)
    forget()
    assert summary.exit_code == 0 and summary.seeds_run == 2 and summary.seeds_failed == 0
