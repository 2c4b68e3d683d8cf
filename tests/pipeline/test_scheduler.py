"""The task-level scheduler: fairness, budgets that stop at an exact call count and resume exactly, the LM figures
in the progress line and the run summary, batched embeddings, and the dry-run estimate."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.config import load_settings
from mmat.pipeline.synth import EXIT_BUDGET, SynthRequest, run_synth
from mmat.store import open_store
from mmat.testing import DummyLM, scripted
from mmat.testing.scripted import SPECS_PER_SEED, STEPS_PER_TRAJECTORY, VERIFIED_PER_SEED

from .conftest import TOOLS


def sent(models) -> int:
    """Requests the scripted models actually received (cache hits never reach them)."""
    return sum(len(m.calls) for m in models.values())


def table_counts(settings) -> dict[str, int]:
    with open_store(settings, read_only=True) as store:
        one = lambda sql: store.sql(sql)[0]["n"]  # noqa: E731
        return {
            "seeds_done": one("select count(*) n from synth_seeds where status = 'done'"),
            "tasks": one("select count(*) n from tasks"), "distinct_tasks": one("select count(distinct task_id) n from tasks"),
            "trajectories": one("select count(*) n from trajectories"), "steps": one("select count(*) n from steps"),
            "files": one("select count(*) n from files"), "verdicts": one("select count(*) n from verdicts"),
            "embeddings": one("select count(*) n from query_embeddings"),
        }


def expected_counts(seeds: int) -> dict[str, int]:
    return {"seeds_done": seeds, "tasks": seeds * SPECS_PER_SEED, "distinct_tasks": seeds * SPECS_PER_SEED,
            "trajectories": seeds * VERIFIED_PER_SEED, "steps": seeds * VERIFIED_PER_SEED * STEPS_PER_TRAJECTORY,
            "files": seeds * 4, "verdicts": seeds * (2 * (SPECS_PER_SEED + VERIFIED_PER_SEED) + VERIFIED_PER_SEED),
            "embeddings": seeds * SPECS_PER_SEED}


def test_a_slow_task_does_not_hold_up_the_other_tasks_of_its_seed(synth_settings):
    """One seed, three tasks; the query-file verdict of the first task takes 3 s. The other tasks are made,
    verified and solved meanwhile (with seed-level scheduling they would all wait behind it)."""
    log: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def timed(role, fn, slow_when=None):
        def respond(messages, fields):
            start = time.monotonic()
            query = scripted.field(messages, "query") or scripted.field(messages, "task") or ""
            if slow_when is not None and slow_when(query, fields):
                time.sleep(3.0)
            out = fn(messages, fields)
            with lock:
                log.append((f"{role}:{'+'.join(fields)}:{query}", start, time.monotonic()))
            return out
        return respond

    slow = lambda query, fields: "passed" in fields and "verdict" not in fields and "budget file" in query  # noqa: E731
    DummyLM(timed("teacher", scripted.teacher), name="teacher")
    DummyLM(timed("verifier", scripted.verifier, slow), name="verifier")
    DummyLM(timed("agent", scripted.agent), name="agent")
    settings = synth_settings.model_copy(update={"concurrency": 2})
    summary = run_synth(settings, SynthRequest(tasks=1, tools=TOOLS, trajectories_per_task=1), progress=False)
    assert summary.status == "done" and summary.counts["solved"] == VERIFIED_PER_SEED

    slow_call = [(s, e) for name, s, e in log if name.startswith("verifier:reasons+passed") and "budget file" in name]
    assert len(slow_call) == 1 and slow_call[0][1] - slow_call[0][0] >= 3.0
    photo_traj_verdict = [e for name, s, e in log if name.startswith("verifier:reasons+verdict") and "photo" in name]
    vague_verdict = [e for name, s, e in log if name.startswith("verifier:reasons+passed") and "interesting" in name]
    # the photo task was solved and verified, and the vague one rejected, while the slow verdict was in flight
    assert photo_traj_verdict and photo_traj_verdict[0] < slow_call[0][1]
    assert vague_verdict and vague_verdict[0] < slow_call[0][1]


@pytest.mark.slow
@pytest.mark.parametrize("budget", [1, 20])
def test_max_calls_stops_at_exactly_that_many_requests_and_a_rerun_completes_exactly(synth_settings, mmat_home, tmp_path,
                                                                                    budget):
    seeds = 3
    request = SynthRequest(tasks=seeds, tools=TOOLS, trajectories_per_task=1)
    reference_home = tmp_path / "reference"  # an uninterrupted run: how many requests the whole run takes
    models = scripted.register()
    run_synth(load_settings(home=reference_home, **_roles(synth_settings)), request, progress=False)
    whole = sent(models)
    assert whole > 20

    models = scripted.register()  # fresh call logs; a fresh home (its own DSPy cache)
    first = run_synth(synth_settings, request.model_copy(update={"max_calls": budget}), progress=False)
    assert sent(models) == budget and first.lm["calls"] == budget
    assert first.status == "budget" and first.exit_code == EXIT_BUDGET
    assert first.stop_reason == f"budget reached: {budget} calls; rerun without --max-calls to continue"
    assert first.seeds_run < seeds
    with open_store(synth_settings, read_only=True) as store:
        run = store.sql("select status, summary from runs")[0]
        assert run["status"] == "interrupted" and json.loads(run["summary"])["status"] == "budget"
        assert store.sql("select count(*) n from lm_calls where not cache_hit")[0]["n"] == budget
        assert store.sql("select count(*) n from synth_seeds where status <> 'done'")[0]["n"] == 0

    again = run_synth(synth_settings, request, progress=False)
    assert again.status == "done" and again.seeds_done_before + again.seeds_run == seeds
    assert table_counts(synth_settings) == expected_counts(seeds)
    # the replies the budgeted run got were cached: together the two runs sent what one run sends
    assert sent(models) == whole


def _roles(settings) -> dict:
    return {"teacher": settings.teacher, "verifier": settings.verifier_model, "controller": settings.controller_model,
            "dedup_threshold": settings.dedup_threshold, "concurrency": settings.concurrency,
            "step_timeout_s": settings.step_timeout_s}


def test_max_calls_on_the_command_line_exits_3_and_says_how_to_continue(mmat_home, scripted_models):
    args = ["synth", "--home", str(mmat_home), "--teacher", "dummy/teacher", "--verifier", "dummy/verifier",
            "--controller", "dummy/agent", "--tasks", "2", "--tools", ",".join(TOOLS), "-k", "1", "--concurrency", "4",
            "--quiet"]
    env = {"MMAT_DEDUP_THRESHOLD": "0.99"}
    stopped = CliRunner().invoke(cli, [*args, "--max-calls", "20"], env=env)
    assert stopped.exit_code == EXIT_BUDGET, stopped.output
    assert "budget reached: 20 calls; rerun without --max-calls to continue" in stopped.stdout
    assert sent(scripted_models) == 20
    finished = CliRunner().invoke(cli, args, env=env)
    assert finished.exit_code == 0, finished.output
    assert table_counts(load_settings(home=mmat_home)) == expected_counts(2)


def test_a_cost_budget_stops_new_calls_once_spent(synth_settings, scripted_models):
    import litellm

    for role in ("teacher", "verifier", "agent"):  # priced so that every reply costs something
        litellm.register_model({f"dummy/{role}": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                                  "litellm_provider": "dummy", "mode": "chat",
                                                  "supports_response_schema": True}})
    try:
        summary = run_synth(synth_settings, SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=1, max_cost=0.002),
                            progress=False)
    finally:
        for role in ("teacher", "verifier", "agent"):
            litellm.register_model({f"dummy/{role}": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                                      "litellm_provider": "dummy", "mode": "chat",
                                                      "supports_response_schema": True}})
    assert summary.status == "budget" and summary.exit_code == EXIT_BUDGET
    assert summary.lm["cost"] >= 0.002 and "budget reached: $" in summary.stop_reason
    # no request started once the cost was reached: only those already in flight then (at most concurrency)
    with open_store(synth_settings, read_only=True) as store:
        costs = [r["cost"] for r in store.sql("select cost from lm_calls where not cache_hit order by started_at")]
    spent_before_last = np.cumsum(costs)[:-synth_settings.concurrency]
    assert (spent_before_last < 0.002).all()


def test_the_summary_and_the_progress_line_carry_the_gates_figures(synth_settings, scripted_models):
    from mmat.lm_gate import LMGate
    from mmat.pipeline.progress import lm_line

    summary = run_synth(synth_settings, SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=1), progress=False)
    lm = summary.lm
    assert lm["calls"] == sent(scripted_models) and lm["throttled"] == 0 and lm["concurrency"] == 2
    assert lm["limit_history"][0] == [0.0, 2] and lm["tokens"] > 0
    assert f"LM: {lm['calls']} calls sent, 0 throttled" in summary.render()
    with open_store(synth_settings, read_only=True) as store:
        stored = json.loads(store.sql("select summary from runs")[0]["summary"])
    assert stored["lm"]["calls"] == lm["calls"] and stored["lm"]["limit_history"] == lm["limit_history"]
    gate = LMGate(8)
    with gate.slot() as slot:
        slot.report(tokens=150, cost=0.25)
        assert lm_line(gate.snapshot()).startswith("LM 1/8 in flight · ")
    line = lm_line(gate.snapshot())
    assert line.startswith("LM 0/8 in flight · ") and "calls/s" in line and "tok/s" in line and line.endswith("$0.2500")


def test_concurrent_embeddings_are_batched_and_equal_single_calls():
    from mmat.embed import Embedder
    from mmat.pipeline.scheduler import EmbedBatcher

    texts = [[f"how much was spent on rent in month {i}?", f"a photo of a cat number {i}"] for i in range(12)]
    direct = [Embedder.shared().embed(t) for t in texts]
    batcher = EmbedBatcher(window_s=0.05)
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def ask(i):
        barrier.wait()
        results[i] = batcher.embed(texts[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batcher.batches < len(texts)
    for i, vectors in results.items():
        assert vectors.shape == (2, 384)
        np.testing.assert_allclose(vectors, direct[i], atol=1e-5)


def test_dry_run_samples_two_seeds_keeps_them_and_the_real_run_reuses_them(mmat_home, scripted_models):
    args = ["synth", "--home", str(mmat_home), "--teacher", "dummy/teacher", "--verifier", "dummy/verifier",
            "--controller", "dummy/agent", "--tasks", "5", "--tools", ",".join(TOOLS), "-k", "1", "--quiet"]
    env = {"MMAT_DEDUP_THRESHOLD": "0.99"}
    dry = CliRunner().invoke(cli, [*args, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    per_seed = sent(scripted_models) / 2
    assert f"{per_seed:.1f} LM calls per seed, from a sample of 2 seed(s) run now" in dry.stdout
    assert f"3 of 5 seed(s) still to do: about {round(per_seed * 3)} LM calls" in dry.stdout
    again = CliRunner().invoke(cli, [*args, "--dry-run"], env=env)  # now from the stored seeds: nothing is run
    assert again.exit_code == 0 and "from 2 finished seed(s) of this run" in again.stdout
    assert sent(scripted_models) == per_seed * 2
    real = CliRunner().invoke(cli, args, env=env)
    assert real.exit_code == 0 and "3 seed(s) run (2 already done)" in real.stdout
    assert table_counts(load_settings(home=mmat_home)) == expected_counts(5)
