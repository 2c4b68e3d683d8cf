"""`mmat synth` end to end with scripted models: every table, resume, exclusion."""

import json

from mmat.pipeline.synth import SynthRequest, run_synth
from mmat.store import open_store
from mmat.testing.scripted import SPECS_PER_SEED, STEPS_PER_TRAJECTORY, VAGUE, VERIFIED_PER_SEED

from .conftest import TOOLS


def test_tasks_files_trajectories_and_verdicts_land_in_the_store(synth_settings, scripted_models):
    summary = run_synth(synth_settings, SynthRequest(tasks=2, tools=TOOLS, trajectories_per_task=2), progress=False)
    assert summary.seeds_run == 2 and summary.counts["solved"] == 2 * VERIFIED_PER_SEED
    with open_store(synth_settings, read_only=True) as store:
        q = lambda sql: store.sql(sql)  # noqa: E731
        statuses = {r["status"]: r["n"] for r in q("select status, count(*) n from tasks group by 1")}
        assert statuses == {"solved": 2 * VERIFIED_PER_SEED, "rejected": 2 * (SPECS_PER_SEED - VERIFIED_PER_SEED)}
        rejected = q("select status_reason from tasks where status = 'rejected'")
        assert all(r["status_reason"] == "query-file verifier: too vague to check" for r in rejected)
        # files: every verified task has its CSV (and the image task its pool photo), stored by content
        files = q("select f.name, f.source, f.modality, f.sha256, f.path from files f join tasks t using (task_id) where t.status = 'solved' order by 1")
        assert sorted({(f["name"], f["source"]) for f in files}) == [("march.csv", "generated"), ("photo.png", "pool")]
        assert all((synth_settings.blobs_dir / f["path"]).is_file() and f["path"].startswith(f["sha256"][:2]) for f in files)
        # two trajectories per verified task, two steps each, tool calls recorded as structs
        trajs = q("select traj_id, answer, verdict, n_steps, status from trajectories")
        assert len(trajs) == 2 * VERIFIED_PER_SEED * 2
        assert all(t["verdict"] == "correct" and t["n_steps"] == STEPS_PER_TRAJECTORY and t["status"] == "answered" for t in trajs)
        first = q("select tool_calls, observation from steps where idx = 0 limit 1")[0]
        assert first["tool_calls"][0]["name"] == "inspect_file_as_text" and "rent" in first["observation"]
        assert json.loads(first["tool_calls"][0]["arguments"]) == {"file_path": "march.csv"}
        # verdicts for both verifiers, with reasons; every LM call recorded with its module
        kinds = {(r["verifier"], r["passed"]): r["n"] for r in q("select verifier, passed, count(*) n from verdicts group by 1, 2")}
        assert kinds[("query_file", False)] == 2 and kinds[("trajectory", True)] == len(trajs)
        models = {r["model"] for r in q("select distinct model from lm_calls")}
        assert models == {"dummy/teacher", "dummy/verifier", "dummy/agent"}
        assert q("select count(*) n from lm_calls where module is null")[0]["n"] == 0
        run = q(f"select status, settings from runs where run_id = '{summary.run_id}'")[0]
        assert run["status"] == "done" and json.loads(run["settings"])["teacher"] == "dummy/teacher"


def test_rerun_resumes_and_duplicates_nothing(synth_settings, scripted_models):
    request = SynthRequest(tasks=2, tools=TOOLS)
    first = run_synth(synth_settings, request, progress=False)
    again = run_synth(synth_settings, request, progress=False)
    assert again.run_id == first.run_id and again.seeds_run == 0 and again.seeds_done_before == 2
    more = run_synth(synth_settings, request.model_copy(update={"tasks": 3}), progress=False)
    assert more.seeds_run == 1 and more.run_id == first.run_id
    with open_store(synth_settings, read_only=True) as store:
        n, distinct = store.sql("select count(*) n, count(distinct task_id) d from tasks")[0].values()
        assert n == distinct == 3 * SPECS_PER_SEED


def test_a_seed_killed_between_its_rows_and_its_done_mark_comes_back_as_it_was(synth_settings, scripted_models):
    """A kill after a seed's rows were flushed but before its done mark: the rerun deletes those rows and makes
    the seed again. Its queries must not be judged near-duplicates of the rows being redone."""
    request = SynthRequest(tasks=3, tools=TOOLS, trajectories_per_task=1)
    run_synth(synth_settings, request, progress=False)
    outcome = "select t.seed_idx, t.status, t.status_reason, count(j.traj_id) n from tasks t " \
              "left join trajectories j using (task_id) group by all order by all"
    with open_store(synth_settings) as store:
        uninterrupted = store.sql(outcome)
        store.writer.execute("DELETE FROM synth_seeds WHERE seed_idx = 2")
        store.writer.flush()
    again = run_synth(synth_settings, request, progress=False)
    assert again.seeds_run == 1 and again.seeds_done_before == 2
    with open_store(synth_settings, read_only=True) as store:
        assert store.sql(outcome) == uninterrupted
        assert store.sql("select count(*) n from trajectories")[0]["n"] == 3 * VERIFIED_PER_SEED


def test_exclude_drops_queries_sharing_a_13gram_with_the_benchmark(synth_settings, scripted_models, tmp_path):
    bench = tmp_path / "gta.json"
    bench.write_text(json.dumps({"0": {
        "tools": [], "files": [], "gt_answer": {"whitelist": [["950"]]},
        "dialogs": [{"role": "user", "content": f"Hello! {VAGUE}. Thanks"},
                    {"role": "assistant", "content": "950"}],
    }}))
    summary = run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, exclude=bench, trajectories_per_task=1), progress=False)
    assert summary.excluded == 1
    with open_store(synth_settings, read_only=True) as store:
        reasons = [r["status_reason"] for r in store.sql("select status_reason from tasks where status = 'rejected'")]
    assert reasons == ["shares a 13-gram with a benchmark query (--exclude)"]


def test_a_repeated_rejected_query_is_one_row_and_one_count(synth_settings, scripted_models):
    from mmat.testing import DummyLM, scripted

    def repeating(messages, fields):
        if fields == ["queries"]:
            bad = {"query": "Which tool should I use for this made-up job?", "intended_tools": ["telepathy"],
                   "file_needs": [], "expected_answer_type": "short_text", "expected_answer": None}
            return {"queries": [bad, bad]}
        return scripted.teacher(messages, fields)

    DummyLM(repeating, name="teacher")
    summary = run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS), progress=False)
    assert summary.counts.get("rejected") == 1 and summary.counts.get("generated", 0) == 0
    with open_store(synth_settings, read_only=True) as store:
        assert store.sql("select count(*) n from tasks")[0]["n"] == 1


def test_program_files_say_what_they_loaded_and_a_refused_one_leaves_no_run(synth_settings, scripted_models, tmp_path, capsys):
    import mmat
    from mmat.errors import ConfigError
    from mmat.optimizers.compiled import CompiledHeader, save_compiled
    from mmat.programs import QueryGenerator

    def compiled(name, program):
        return save_compiled(QueryGenerator(), tmp_path / name, CompiledHeader(
            mmat_version=mmat.__version__, program=program, module="query_generator", module_class="QueryGenerator",
            optimizer="bootstrap"))

    import pytest

    with pytest.raises(ConfigError, match="names program 'agent' but module 'query_generator'"):
        run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, program=compiled("bad.json", "agent")), progress=False)
    with open_store(synth_settings, read_only=True) as store:
        assert store.sql("select count(*) n from runs")[0]["n"] == 0
    good = compiled("good.json", "query_generator")
    run_synth(synth_settings, SynthRequest(tasks=1, tools=TOOLS, program=good, trajectories_per_task=1), progress=False)
    assert f"loaded {good}: compiled query_generator (bootstrap, 0 demo(s), run -) into the query_generator stage" in capsys.readouterr().err
