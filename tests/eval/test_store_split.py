"""mmat's own eval split loaded from a real store: tasks, blob files, rejected tasks skipped."""

import pytest

from mmat.eval.loaders import load_bench
from mmat.eval.store_split import load_store_split
from mmat.store import Store

from .helpers import make_image


@pytest.fixture
def store(mmat_home):
    st = Store.open(mmat_home / "mmat.duckdb")
    yield st
    st.close()


def test_eval_split_items(store, tmp_path):
    rel, sha = store.put_blob(make_image(tmp_path / "chart.png"), ".png")
    store.writer.put("tasks", [
        {"task_id": "t1", "split": "eval", "query": "What colour is chart.png?", "intended_tools": ["visualizer"],
         "expected_answer": "red", "status": "verified"},
        {"task_id": "t2", "split": "eval", "query": "Make a poster", "intended_tools": ["image_generator"],
         "expected_answer": None, "status": "verified"},
        {"task_id": "t3", "split": "eval", "query": "Bad task", "intended_tools": [], "expected_answer": "x",
         "status": "rejected", "status_reason": "file does not match the query"},
        {"task_id": "t4", "split": "train", "query": "Training task", "intended_tools": [], "status": "verified"},
        {"task_id": "t5", "split": "eval", "query": "Lost file", "intended_tools": [], "status": "verified"},
    ])
    store.writer.put("files", [
        {"file_id": "f1", "task_id": "t1", "name": "chart.png", "path": rel, "sha256": sha},
        {"file_id": "f5", "task_id": "t5", "name": "gone.png", "path": "ab/missing.png", "sha256": "00"},
    ])
    store.writer.flush()
    report = load_store_split(store)
    items = {i.key: i for i in report.items}
    assert list(items) == ["t1", "t2"]
    assert items["t1"].files == [store.blob_path(rel)] and items["t1"].file_names == ["chart.png"]
    assert items["t1"].gold_tool_calls == ["visualizer"] and items["t1"].tools == []
    assert items["t1"].answer_kind == "gaia" and items["t1"].gt == "red"
    assert items["t2"].answer_kind == "none"
    reasons = {s.key: s.reason for s in report.skipped}
    assert reasons["t3"] == "rejected by the verifier: file does not match the query"
    assert reasons["t5"].startswith("file 'gone.png' is missing from the blob store")
    assert load_bench("mmat", store=store).items == report.items
    assert [i.key for i in load_store_split(store, "train").items] == ["t4"]
