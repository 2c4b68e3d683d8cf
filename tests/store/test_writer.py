"""The single writer: upserts, whole-row replacement, errors surfacing, threads, durability."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pytest

from mmat.errors import StoreError
from mmat.store import Store


def traj(i, **extra):
    return {"traj_id": f"tr{i}", "task_id": f"task{i % 3}", "attempt": 0, "n_steps": i, **extra}


def test_rerun_does_not_duplicate(store):
    rows = [traj(i) for i in range(50)]
    for _ in range(3):
        store.writer.put("trajectories", rows)
        store.writer.flush()
    assert store.sql("SELECT count(*) AS n, count(DISTINCT traj_id) AS d FROM trajectories") == [{"n": 50, "d": 50}]


def test_later_version_wins_within_and_across_batches(store):
    store.writer.put("trajectories", [traj(1, status="answered"), traj(1, status="fallback")])  # same batch
    store.writer.flush()
    assert store.sql("SELECT status FROM trajectories") == [{"status": "fallback"}]
    store.writer.put("trajectories", [traj(1, status="crashed")])
    store.writer.put("trajectories", [traj(1, status="error_limit"), traj(2)])
    store.writer.flush()
    assert store.sql("SELECT traj_id, status FROM trajectories ORDER BY 1") == [
        {"traj_id": "tr1", "status": "error_limit"}, {"traj_id": "tr2", "status": None},
    ]


def test_later_version_replaces_the_whole_row(store):
    store.writer.put("tasks", [{"task_id": "t", "query": "q", "intended_tools": ["ocr"], "file_needs": {"n": 1}}])
    store.writer.put("tasks", [{"task_id": "t", "status": "verified"}])
    store.writer.flush()
    assert store.sql("SELECT query, intended_tools, file_needs, status FROM tasks") == [
        {"query": None, "intended_tools": None, "file_needs": None, "status": "verified"}
    ]


def test_composite_primary_key(store):
    rows = [{"eval_run_id": "e", "item_key": str(k), "sample_idx": s, "answer": f"{k}-{s}"} for k in range(3) for s in range(2)]
    store.writer.put("eval_items", rows)
    store.writer.put("eval_items", [{"eval_run_id": "e", "item_key": "1", "sample_idx": 1, "answer": "changed"}])
    store.writer.flush()
    got = store.sql("SELECT item_key, sample_idx, answer FROM eval_items ORDER BY 1, 2")
    assert len(got) == 6
    assert got[3] == {"item_key": "1", "sample_idx": 1, "answer": "changed"}


def test_unknown_table_and_columns_fail_at_put(store):
    with pytest.raises(StoreError, match=r"^the store has no table 'nope': use one of \["):
        store.writer.put("nope", [{"a": 1}])
    with pytest.raises(StoreError) as err:
        store.writer.put("runs", [{"run_id": "r", "kind": "k", "colour": 1, "size": 2}])
    assert str(err.value).startswith("table runs has no column(s) ['colour', 'size']: its columns are ['run_id', ")
    with pytest.raises(StoreError, match=r"steps\.tool_calls has no field\(s\) \['extra'\]"):
        store.writer.put("steps", [{"traj_id": "t", "idx": 0, "tool_calls": [{"name": "ocr", "extra": 1}]}])


def test_bad_values_fail_at_put_naming_the_column(store):
    with pytest.raises(StoreError, match=r"^trajectories\.n_steps: cannot store 'many' as int32"):
        store.writer.put("trajectories", [traj(1), {"traj_id": "x", "n_steps": "many"}])
    with pytest.raises(StoreError, match=r"^verdicts\.reasons: cannot store .*pass JSON-able values"):
        store.writer.put("verdicts", [{"verdict_id": "v", "reasons": {"score": float("nan")}}])
    store.writer.flush()  # nothing was queued by the failed puts
    assert store.sql("SELECT count(*) AS n FROM trajectories") == [{"n": 0}]


def test_error_in_writer_thread_surfaces_on_next_put_and_only_once(store):
    store.writer.put("runs", [{"run_id": "no-kind"}])  # runs.kind is NOT NULL: only DuckDB knows
    with pytest.raises(StoreError) as err:
        store.writer.flush()
    assert str(err.value).startswith("writing 1 row(s) to runs failed (Constraint Error: NOT NULL constraint failed: runs.kind)")
    assert str(err.value).endswith("those rows were not stored: fix the values and put them again")
    store.writer.put("runs", [{"run_id": "ok", "kind": "demo"}])
    store.writer.flush()  # the error was raised once; the writer keeps working
    assert store.sql("SELECT run_id FROM runs") == [{"run_id": "ok"}]


def test_bad_json_text_on_the_bulk_path_surfaces(store):
    store.writer.put_arrow("verdicts", pa.table({"verdict_id": ["v1"], "reasons": ["{not json"]}))
    with pytest.raises(StoreError, match=r"^writing 1 row\(s\) to verdicts failed \(Conversion Error: Malformed JSON"):
        store.writer.flush()
    assert store.sql("SELECT count(*) AS n FROM verdicts") == [{"n": 0}]


def test_error_is_raised_by_the_next_put_when_it_comes_first(store):
    store.writer.put("runs", [{"run_id": "no-kind"}])
    with pytest.raises(StoreError, match="NOT NULL constraint failed"):
        for _ in range(500):  # the error lands asynchronously; one of these puts must raise it
            store.writer.put("runs", [{"run_id": "fine", "kind": "demo"}])
            threading.Event().wait(0.01)
    store.writer.flush()


def test_close_raises_pending_errors(mmat_home):
    s = Store.open(mmat_home / "m.duckdb")
    s.writer.put("runs", [{"run_id": "no-kind"}])
    with pytest.raises(StoreError, match="NOT NULL constraint failed"):
        s.close()
    assert s.closed


def test_many_threads_one_writer(store):
    def work(t):
        for i in range(20):
            store.writer.put("steps", [{"traj_id": f"t{t}", "idx": i, "thought": f"{t}:{i}"}])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    store.writer.flush()
    assert store.sql("SELECT count(*) AS n FROM steps") == [{"n": 160}]
    assert store.sql("SELECT thought FROM steps WHERE traj_id = 't5' AND idx = 7") == [{"thought": "5:7"}]


def test_execute_runs_in_order_with_puts(store):
    store.writer.put("tasks", [{"task_id": "t1", "status": "generated"}])
    store.writer.execute("UPDATE tasks SET status = ? WHERE task_id = ?", ["verified", "t1"])
    store.writer.put("tasks", [{"task_id": "t2", "status": "generated"}])
    store.writer.flush()
    assert store.sql("SELECT task_id, status FROM tasks ORDER BY 1") == [
        {"task_id": "t1", "status": "verified"}, {"task_id": "t2", "status": "generated"},
    ]
    store.writer.execute("UPDATE no_such_table SET x = 1")
    with pytest.raises(StoreError, match=r"^statement 'UPDATE no_such_table SET x = 1' failed \(Catalog Error"):
        store.writer.flush()


def test_put_arrow_fills_missing_columns_and_casts(store):
    data = pa.table({"traj_id": ["a", "b"], "n_steps": pa.array([3, 4], pa.int64())})
    store.writer.put_arrow("trajectories", data)
    store.writer.flush()
    assert store.sql("SELECT traj_id, n_steps, answer FROM trajectories ORDER BY 1") == [
        {"traj_id": "a", "n_steps": 3, "answer": None}, {"traj_id": "b", "n_steps": 4, "answer": None},
    ]
    with pytest.raises(StoreError, match=r"table trajectories has no column\(s\) \['bogus'\]"):
        store.writer.put_arrow("trajectories", pa.table({"traj_id": ["c"], "bogus": [1]}))


def test_clean_close_keeps_every_row(mmat_home):
    path = mmat_home / "m.duckdb"
    s = Store.open(path)
    s.writer.put("steps", [{"traj_id": "t", "idx": i} for i in range(1000)])
    s.close()  # no flush: close flushes
    with Store.open(path) as again:
        assert again.sql("SELECT count(*) AS n FROM steps") == [{"n": 1000}]


def test_kill_9_loses_at_most_the_unflushed_rows(tmp_path):
    path = tmp_path / "m.duckdb"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from mmat.store import Store
        s = Store.open({str(path)!r})
        s.writer.put("trajectories", [{{"traj_id": f"flushed{{i}}"}} for i in range(100)])
        s.writer.flush()
        s.writer.put("trajectories", [{{"traj_id": f"pending{{i}}"}} for i in range(100)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Store.open(path) as s:
        flushed = s.sql("SELECT count(*) AS n FROM trajectories WHERE traj_id LIKE 'flushed%'")[0]["n"]
        pending = s.sql("SELECT count(*) AS n FROM trajectories WHERE traj_id LIKE 'pending%'")[0]["n"]
    assert flushed == 100
    assert pending in (0, 100)  # a batch is one transaction: all or nothing


def test_read_back_json_is_what_was_put(store):
    store.writer.put("verdicts", [{"verdict_id": "v", "reasons": ["too vague", {"tool": "ocr"}], "verdict": "no"}])
    store.writer.flush()
    row = store.sql("SELECT reasons FROM verdicts")[0]
    assert json.loads(row["reasons"]) == ["too vague", {"tool": "ocr"}]


def test_writer_after_close_refuses(mmat_home):
    s = Store.open(mmat_home / "m.duckdb")
    w = s.writer
    s.close()
    with pytest.raises(StoreError, match="is closed"):
        s.writer
    with pytest.raises(StoreError, match="writer is closed"):
        w.put("runs", [{"run_id": "r", "kind": "k"}])
    assert not os.path.exists(str(s.path) + ".wal")
