"""Run records: settings saved as JSON, resume by run_id, finish, no secrets."""

import json

import pytest

import mmat
from mmat.config import load_settings
from mmat.errors import StoreError
from mmat.store import resumable_run_id


def run_row(store, run_id):
    return store.sql("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]


def test_start_and_finish(store):
    settings = load_settings(teacher="dummy/t", seed=7)
    run_id = store.start_run("synth", settings, "mmat synth --seeds 3")
    row = run_row(store, run_id)
    assert row["kind"] == "synth" and row["status"] == "running" and row["command"] == "mmat synth --seeds 3"
    assert json.loads(row["settings"]) == settings.to_record()
    assert row["mmat_version"] == mmat.__version__
    assert row["started_at"] is not None and row["finished_at"] is None

    store.finish_run(run_id, "done", {"tasks": 3, "kept": 2})
    row = run_row(store, run_id)
    assert row["status"] == "done"
    assert json.loads(row["summary"]) == {"tasks": 3, "kept": 2}
    assert json.loads(row["settings"]) == settings.to_record()  # not double-encoded by the update
    assert row["finished_at"] >= row["started_at"]


def test_fresh_ids_differ_and_resume_keeps_start_time(store):
    settings = load_settings()
    a = store.start_run("eval", settings, "mmat eval gta.json")
    b = store.start_run("eval", settings, "mmat eval gta.json")
    assert a != b
    rid = resumable_run_id("synth", settings, "mmat synth")
    assert rid == resumable_run_id("synth", settings, "mmat synth")
    assert store.start_run("synth", settings, "mmat synth", run_id=rid) == rid
    started = run_row(store, rid)["started_at"]
    store.finish_run(rid, "interrupted", {"done": 1})
    store.start_run("synth", settings, "mmat synth", run_id=rid)
    row = run_row(store, rid)
    assert (row["status"], row["started_at"], row["finished_at"]) == ("running", started, None)
    assert store.sql("SELECT count(*) AS n FROM runs WHERE run_id = ?", [rid]) == [{"n": 1}]


def test_secrets_in_a_settings_dict_never_reach_the_store(store):
    run_id = store.start_run("demo", {"teacher": "openai/x", "api_key": "sk-live-123", "nested": {"hf_token": "hf_abc"}}, "mmat demo")
    assert json.loads(run_row(store, run_id)["settings"]) == {"teacher": "openai/x", "nested": {}}


def test_finish_errors(store):
    with pytest.raises(StoreError, match="run nope is not in the store: start it with store.start_run first"):
        store.finish_run("nope", "done", {})
    run_id = store.start_run("demo", {}, "mmat demo")
    with pytest.raises(StoreError, match="is not a final status: use one of done, failed, interrupted"):
        store.finish_run(run_id, "ok", {})
