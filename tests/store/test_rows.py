"""The store's per-seed knowledge: which tables a seed writes, deleting a half-written seed, and naming a seed's
seed-level LM calls (also for a store written before migration 010)."""

from mmat.store import Store
from mmat.store.rows import SEED_TABLES, attribute_seed_calls, delete_partial_seeds
from mmat.store.runs import utcnow
from mmat.store.schema import MIGRATIONS

RUN = "r1"


def _seed(store, seed_idx: int, *, tasks: int = 2) -> list[str]:
    """One seed's rows in every per-seed table, and its query-generation call (no task yet)."""
    ids = [f"task{seed_idx}_{i}" for i in range(tasks)]
    for i, task_id in enumerate(ids):
        traj_id = f"traj_{task_id}"
        store.writer.put("tasks", [{"task_id": task_id, "run_id": RUN, "seed_idx": seed_idx, "query": "q", "status": "solved"}])
        store.writer.put("files", [{"file_id": f"f_{task_id}", "task_id": task_id, "path": "x", "sha256": "0"}])
        store.writer.put("trajectories", [{"traj_id": traj_id, "task_id": task_id, "run_id": RUN, "attempt": 0}])
        store.writer.put("steps", [{"traj_id": traj_id, "idx": 0, "code": "print(1)"}])
        store.writer.put("verdicts", [{"verdict_id": f"v_{task_id}", "subject_kind": "task", "subject_id": task_id},
                                      {"verdict_id": f"v_{traj_id}", "subject_kind": "trajectory", "subject_id": traj_id}])
        store.writer.put("query_embeddings", [{"task_id": task_id, "embedding": [0.0] * 384}])
        store.writer.put("lm_calls", [{"call_id": f"c_{task_id}", "run_id": RUN, "seed_idx": seed_idx, "task_id": task_id,
                                       "seed_call": False, "cost": 1.0, "prompt_tokens": 10}])
    store.writer.put("lm_calls", [{"call_id": f"plan{seed_idx}", "run_id": RUN, "seed_idx": seed_idx, "task_id": None,
                                   "seed_call": True, "cost": 4.0, "prompt_tokens": 40, "started_at": utcnow()}])
    store.writer.flush()
    return ids


def _count(store, table: str) -> int:
    return store.sql(f"SELECT count(*) AS n FROM {table}")[0]["n"]


def test_a_partial_seed_loses_every_per_seed_row_and_keeps_its_calls(store):
    _seed(store, 0)
    _seed(store, 1)
    before = {t: _count(store, t) for t in SEED_TABLES}
    assert delete_partial_seeds(store, RUN, done={0}) == [1]
    for table in SEED_TABLES:
        assert _count(store, table) == before[table] // 2, table  # seed 0's rows stay, seed 1's are gone
    assert _count(store, "lm_calls") == 6  # spent calls are kept
    assert delete_partial_seeds(store, RUN, done={0}) == []


def test_seed_calls_name_the_first_task_and_task_costs_shares_them(store):
    ids = _seed(store, 0)
    attribute_seed_calls(store, RUN, 0)
    attribute_seed_calls(store, RUN, 5)  # a seed that stored no task: nothing to name
    store.writer.flush()
    assert store.sql("SELECT task_id FROM lm_calls WHERE call_id = 'plan0'") == [{"task_id": min(ids)}]
    costs = store.sql("SELECT task_id, calls, own_cost, seed_share_cost, cost FROM task_costs ORDER BY task_id")
    assert costs == [{"task_id": t, "calls": 1, "own_cost": 1.0, "seed_share_cost": 2.0, "cost": 3.0} for t in ids]


def test_migration_010_names_the_first_task_in_an_older_store(tmp_path):
    path = tmp_path / "old.duckdb"
    before = [m for m in MIGRATIONS if m[0] < "010"]
    with Store.open(path, migrations=before) as old:
        old.writer.put("tasks", [{"task_id": t, "run_id": RUN, "seed_idx": 0, "status": "solved"} for t in ("b", "a")])
        old.writer.put("lm_calls", [{"call_id": "plan", "run_id": RUN, "seed_idx": 0, "task_id": None, "cost": 2.0},
                                    {"call_id": "lost", "run_id": RUN, "seed_idx": 9, "task_id": None, "cost": 1.0}])
        old.writer.put("runs", [{"run_id": RUN, "kind": "synth", "status": "running"}])
    with Store.open(path) as store:
        calls = store.sql("SELECT call_id, task_id, seed_call FROM lm_calls ORDER BY call_id")
        assert calls == [{"call_id": "lost", "task_id": None, "seed_call": True},  # its seed made no task
                         {"call_id": "plan", "task_id": "a", "seed_call": True}]
        assert [r["seed_share_cost"] for r in store.sql("SELECT seed_share_cost FROM task_costs")] == [1.0, 1.0]
        assert store.sql("SELECT status, owner FROM runs") == [{"status": "running", "owner": None}]  # unknown owner: kept
