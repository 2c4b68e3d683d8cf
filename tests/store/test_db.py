"""Opening the store: fresh and old databases, locks, corrupt files, newer schemas, read-only, SQL errors."""

import subprocess
import sys
import textwrap

import pytest

from mmat.errors import StoreError
from mmat.store import Store
from mmat.store.schema import MIGRATIONS

CORE_TABLES = {
    "runs", "lm_calls", "tasks", "files", "trajectories", "steps", "verdicts", "preference_pairs",
    "eval_runs", "eval_items", "pool_images", "query_embeddings",
}


def migration_names(store):
    return [r["name"] for r in store.sql("SELECT name FROM schema_migrations ORDER BY applied_at")]


def test_fresh_database_gets_every_migration(mmat_home, store):
    assert store.path == mmat_home / "mmat.duckdb"
    assert CORE_TABLES <= set(store.tables())
    assert migration_names(store) == [name for name, _ in MIGRATIONS]
    applied_at = store.sql("SELECT applied_at FROM schema_migrations")[0]["applied_at"]
    assert applied_at is not None


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "m.duckdb"
    Store.open(path).close()
    with Store.open(path) as s:
        assert migration_names(s) == [name for name, _ in MIGRATIONS]


def test_empty_prefix_database_is_migrated_on_open(tmp_path):
    path = tmp_path / "m.duckdb"
    with Store.open(path, migrations=MIGRATIONS[:0]) as s:
        assert set(s.tables()) == {"schema_migrations"}
    with Store.open(path) as s:
        assert CORE_TABLES <= set(s.tables())
        assert migration_names(s) == [name for name, _ in MIGRATIONS]


def test_old_database_gets_the_rest_and_keeps_its_rows(tmp_path):
    path = tmp_path / "m.duckdb"
    newer = [*MIGRATIONS, ("999_run_note", "ALTER TABLE runs ADD COLUMN note VARCHAR")]
    with Store.open(path, migrations=MIGRATIONS) as s:
        s.writer.put("runs", [{"run_id": "r1", "kind": "demo"}])
    with Store.open(path, migrations=newer) as s:
        assert migration_names(s) == [name for name, _ in MIGRATIONS] + ["999_run_note"]
        assert s.sql("SELECT run_id, kind, note FROM runs") == [{"run_id": "r1", "kind": "demo", "note": None}]
        s.writer.put("runs", [{"run_id": "r2", "kind": "demo", "note": "new column is writable"}])
        s.writer.flush()
        assert s.sql("SELECT note FROM runs WHERE run_id = 'r2'")[0]["note"] == "new column is writable"


def test_trajectories_written_before_origin_existed_get_theirs(tmp_path):
    path = tmp_path / "m.duckdb"
    before = [m for m in MIGRATIONS if m[0] < "005"]
    with Store.open(path, migrations=before) as s:
        s.writer.put("trajectories", [{"traj_id": "a", "task_id": "t1"}, {"traj_id": "b", "task_id": "eval:r1:gta/7"}])
    with Store.open(path) as s:
        assert s.sql("SELECT traj_id, origin FROM trajectories ORDER BY 1") == [
            {"traj_id": "a", "origin": "synth"}, {"traj_id": "b", "origin": "eval"}]


def test_failing_migration_rolls_back_entirely(tmp_path):
    path = tmp_path / "m.duckdb"
    bad = [*MIGRATIONS, ("002_bad", "CREATE TABLE half (a INTEGER); SELECT * FROM no_such_table")]
    with pytest.raises(StoreError, match=r"^migration 002_bad failed on .*no_such_table.*: restore the file"):
        Store.open(path, migrations=bad)
    with Store.open(path) as s:
        assert "half" not in s.tables()
        assert migration_names(s) == [name for name, _ in MIGRATIONS]


def test_database_from_a_newer_mmat_is_refused(tmp_path):
    path = tmp_path / "m.duckdb"
    Store.open(path, migrations=[*MIGRATIONS, ("900_future", "CREATE TABLE future (x INTEGER)")]).close()
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert str(err.value) == (
        f"{path} was written by a newer mmat (unknown migrations: 900_future): "
        "upgrade mmat or point MMAT_HOME elsewhere"
    )


def test_locked_by_another_process(tmp_path):
    path = tmp_path / "m.duckdb"
    holder = textwrap.dedent(f"""
        import sys
        from mmat.store import Store
        s = Store.open({str(path)!r})
        print("ready", flush=True)
        sys.stdin.read()
        s.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as err:
            Store.open(path)
        assert str(err.value) == f"{path} is open in another process (pid {proc.pid}): stop it or use another MMAT_HOME"
        with pytest.raises(StoreError, match="is open in another process"):
            Store.open(path, read_only=True)
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    Store.open(path).close()  # free again once the other process is gone


@pytest.mark.parametrize("junk", [b"definitely not a database\n" * 200, b"", b"\0" * 8192])
def test_corrupt_file_is_refused_and_left_untouched(tmp_path, junk):
    path = tmp_path / "m.duckdb"
    path.write_bytes(junk)
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert str(err.value) == f"{path} is not a DuckDB database: move it away or point MMAT_HOME elsewhere"
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.duckdb"]


def test_directory_in_place_of_the_file(tmp_path):
    (tmp_path / "m.duckdb").mkdir()
    with pytest.raises(StoreError, match="is a directory, not a DuckDB database"):
        Store.open(tmp_path / "m.duckdb")


def test_read_only(tmp_path):
    path = tmp_path / "m.duckdb"
    with pytest.raises(StoreError, match=r"does not exist yet: run a command that writes"):
        Store.open(path, read_only=True)
    assert not path.exists()
    Store.open(path, migrations=MIGRATIONS[:0]).close()
    names = ", ".join(name for name, _ in MIGRATIONS)
    with pytest.raises(StoreError, match=rf"needs migrations \({names}\): open it read-write once"):
        Store.open(path, read_only=True)
    Store.open(path).close()
    with Store.open(path, read_only=True) as s:
        assert s.sql("SELECT count(*) AS n FROM runs") == [{"n": 0}]
        with pytest.raises(StoreError, match="is open read-only: open it without read_only=True to write"):
            s.writer


def test_second_open_in_the_same_process_is_refused(store):
    with pytest.raises(StoreError, match="is already open in this process: reuse that Store object"):
        Store.open(store.path)
    store.close()
    Store.open(store.path).close()


def test_bad_sql_is_one_line_with_duckdb_message(store):
    with pytest.raises(StoreError) as err:
        store.sql("SELEC 1")
    assert str(err.value) == (
        'SQL failed: Parser Error: syntax error at or near "SELEC": fix the query (list the tables with SHOW TABLES)'
    )
    with pytest.raises(StoreError) as err:
        store.sql("SELECT * FROM no_such_table")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("SQL failed: Catalog Error: Table with name no_such_table does not exist!")


def test_sql_params_arrow_and_cursor(store):
    store.writer.put("tasks", [{"task_id": f"t{i}", "seed_idx": i, "query": f"q{i}"} for i in range(5)])
    store.writer.flush()
    assert store.sql("SELECT task_id FROM tasks WHERE seed_idx >= ? ORDER BY 1", [3]) == [
        {"task_id": "t3"}, {"task_id": "t4"},
    ]
    table = store.sql_arrow("SELECT seed_idx FROM tasks ORDER BY 1")
    assert table.column("seed_idx").to_pylist() == [0, 1, 2, 3, 4]
    assert store.sql_arrow("SELECT task_id FROM tasks WHERE seed_idx = ?", [2]).to_pylist() == [{"task_id": "t2"}]
    with pytest.raises(StoreError, match="^SQL failed: Parser Error"):
        store.sql_arrow("SELEC 1")
    with store.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM tasks").fetchall() == [(5,)]


def test_closed_store_says_so(store):
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="is closed: open it again with Store.open"):
        store.sql("SELECT 1")
