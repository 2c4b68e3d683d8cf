"""Reading the store from other processes: read_sql, the writer's read socket, the read-only rule."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from mmat.errors import StoreError
from mmat.store import Store, read_sql, table_rows
from mmat.store.readserver import socket_path

HOLD = textwrap.dedent("""
    import sys, time
    from mmat.store import Store
    store = Store.open(sys.argv[1])
    store.writer.put("runs", [{"run_id": "held", "kind": "demo", "settings": {"teacher": "t", "tags": [1, 2]}}])
    store.writer.flush()
    print("READY", flush=True)
    sys.stdin.readline()          # hold the file until the test says stop
    store.writer.put("runs", [{"run_id": "late", "kind": "demo"}])
    store.writer.flush()
    print("WROTE", flush=True)
    sys.stdin.readline()
    store.close()
""")


@pytest.fixture
def held(tmp_path):
    """A second process holding the store read-write (as a running job does)."""
    path = tmp_path / "mmat.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
    yield path, proc
    if proc.poll() is None:
        proc.stdin.write("\n\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


def test_reads_go_to_the_writing_process_and_see_its_later_commits(held):
    path, proc = held
    rows = table_rows(read_sql(path, "select run_id, settings from runs order by 1"))
    assert rows == [{"run_id": "held", "settings": {"teacher": "t", "tags": [1, 2]}}]
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "WROTE"
    assert read_sql(path, "select count(*) n from runs").column("n").to_pylist() == [2]


def test_the_socket_is_private_to_the_user(held):
    path, _ = held
    mode = os.stat(socket_path(path)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_a_second_writer_still_gets_the_clear_error(held):
    path, proc = held
    with pytest.raises(StoreError, match=rf"is open in another process \(pid {proc.pid}\): stop it or use another MMAT_HOME"):
        Store.open(path)


@pytest.mark.parametrize("query, message", [
    ("delete from runs", "DELETE is not a read"),
    ("select 1; select 2", "2 statements given"),
    ("insert into runs (run_id) values ('x')", "INSERT is not a read"),
    ("begin transaction", "TRANSACTION is not a read"),
    ("attach ':memory:' as other", "ATTACH is not a read"),
])
def test_writes_and_several_statements_are_refused_through_the_socket(held, query, message):
    path, _ = held
    with pytest.raises(StoreError, match=message):
        read_sql(path, query)
    assert read_sql(path, "select count(*) n from runs").column("n").to_pylist() == [1]


def test_copy_from_is_refused_by_the_read_only_transaction(held, tmp_path):
    path, _ = held
    csv = tmp_path / "r.csv"
    csv.write_text("run_id,kind\nx,demo\n")
    with pytest.raises(StoreError, match="read-only"):
        read_sql(path, f"copy runs (run_id, kind) from '{csv}'")
    assert read_sql(path, "select count(*) n from runs").column("n").to_pylist() == [1]


def test_sql_errors_come_back_as_one_line(held):
    path, _ = held
    with pytest.raises(StoreError, match=r"SQL failed: .*no_such_table.*: fix the query"):
        read_sql(path, "select * from no_such_table")


def test_without_a_writer_a_read_opens_and_closes_the_file(tmp_path):
    path = tmp_path / "m.duckdb"
    with Store.open(path) as s:
        s.writer.put("runs", [{"run_id": "r1", "kind": "demo"}])
    assert not socket_path(path).exists()  # removed on close
    assert read_sql(path, "select run_id from runs").column("run_id").to_pylist() == ["r1"]
    with Store.open(path) as s:  # the read left no lock behind
        assert s.sql("select count(*) n from runs")[0]["n"] == 1


def test_a_read_in_the_writing_process_uses_its_open_store(tmp_path):
    path = tmp_path / "m.duckdb"
    with Store.open(path) as s:
        s.writer.put("runs", [{"run_id": "r1", "kind": "demo"}])
        s.writer.flush()
        assert read_sql(path, "select count(*) n from runs").column("n").to_pylist() == [1]


def test_a_stale_socket_from_a_killed_writer_is_replaced(tmp_path):
    path = tmp_path / "m.duckdb"
    Store.open(path).close()
    sock = socket_path(path)
    sock.write_text("left behind")
    with Store.open(path):
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        out = subprocess.run([sys.executable, "-c", f"from mmat.store import read_sql; print(read_sql({str(path)!r}, 'select 41 + 1 a').column('a')[0])"],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "42", out.stderr


def test_long_paths_get_a_private_socket_folder(tmp_path):
    deep = tmp_path / ("d" * 90) / "m.duckdb"
    with Store.open(deep):
        sock = socket_path(deep)
        assert sock.parent != deep.parent and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(sock).st_mode)


def test_nested_json_is_decoded(tmp_path):
    path = tmp_path / "m.duckdb"
    with Store.open(path) as s:
        s.writer.put("steps", [{"traj_id": "t", "idx": 0, "tool_calls": [
            {"name": "ocr", "arguments": {"image": "a.png"}, "result": "hi", "duration_ms": 1.0, "error": None}]}])
    rows = table_rows(read_sql(path, "select tool_calls from steps"))
    assert rows[0]["tool_calls"][0]["arguments"] == {"image": "a.png"}


def test_read_only_open_store_while_held_reads_through_the_writer(held):
    from mmat.config import load_settings
    from mmat.store import open_store
    from mmat.store import StoreReader

    path, _ = held
    with open_store(load_settings(home=path.parent), read_only=True) as store:
        assert isinstance(store, StoreReader)
        assert store.sql("select run_id, settings from runs") == [
            {"run_id": "held", "settings": '{"teacher": "t", "tags": [1, 2]}'}]  # JSON text, as Store.sql gives it
        with pytest.raises(StoreError, match="being written by another process"):
            store.writer


def test_wide_integers_come_back_as_numbers_through_the_socket(held):
    """sum() of integers is a HUGEINT; through the socket it must read as the number, not 16 raw bytes."""
    path, _ = held
    rows = table_rows(read_sql(path, "select sum(x::INTEGER) as s, sum(x::UINTEGER)::UHUGEINT as u, "
                                     "(-170141183460469231731687303715884105727)::HUGEINT as low from range(5) t(x)"))
    assert [(int(r["s"]), int(r["u"])) for r in rows] == [(10, 10)]
    assert int(rows[0]["low"]) == -170141183460469231731687303715884105727  # signed, two's complement
