"""The SQL behind the viewer's pages. Filters are bound parameters; the free ``WHERE`` box is the only
SQL a user types, and it runs as one statement on a read-only connection with external access off."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb

from mmat.errors import ConfigError, StoreError
from mmat.store.dberrors import one_line
from mmat.store.columns import from_json_text

__all__ = ["BrowseFilter", "browse", "filter_options", "trajectory_page", "task_page", "pairs_page", "runs_page",
           "eval_runs", "eval_items", "PAGE_SIZE", "sql_literal"]

PAGE_SIZE = 50
_FILTERS = ("run", "status", "domain", "tool", "verdict", "origin")
BROWSE_COLUMNS = "k.* (tasks), t.* (trajectories)"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class BrowseFilter:
    run: str = ""
    status: str = ""
    domain: str = ""
    tool: str = ""
    verdict: str = ""
    origin: str = ""
    where: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, params) -> "BrowseFilter":
        values = {name: (params.get(name) or "").strip() for name in (*_FILTERS, "where")}
        try:
            page = max(1, int(params.get("page") or 1))
        except ValueError:
            page = 1
        return cls(**values, page=page)

    def query_string(self, **changes: Any) -> str:
        from urllib.parse import urlencode

        values = {name: getattr(self, name) for name in (*_FILTERS, "where", "page")} | changes
        return urlencode({k: v for k, v in values.items() if v not in ("", None, 1)})

    def clauses(self) -> tuple[list[str], list[Any]]:
        sql, params = [], []
        if self.run:
            sql.append("coalesce(t.run_id, k.run_id) = ?")
            params.append(self.run)
        if self.status:
            sql.append("(k.status = ? OR t.status = ?)")
            params += [self.status, self.status]
        if self.domain:
            sql.append("k.domain = ?")
            params.append(self.domain)
        if self.tool:
            sql.append("(list_contains(k.intended_tools, ?) OR t.traj_id IN (SELECT s.traj_id FROM steps s "
                       "WHERE list_contains(list_transform(s.tool_calls, lambda c: c.name), ?)))")
            params += [self.tool, self.tool]
        if self.verdict == "unverified":
            sql.append("t.traj_id IS NOT NULL AND t.verdict IS NULL")
        elif self.verdict:
            sql.append("t.verdict = ?")
            params.append(self.verdict)
        if self.origin:
            sql.append("t.origin = ?")
            params.append(self.origin)
        if self.where:
            sql.append(f"({self.where})")
        return sql, params


@dataclass
class BrowseResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    error: str | None = None

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


_BROWSE_FROM = "FROM tasks k FULL OUTER JOIN trajectories t ON t.task_id = k.task_id"


_probe_lock = threading.Lock()
_probes: dict[tuple, duckdb.DuckDBPyConnection] = {}


def _schema_probe(store) -> duckdb.DuckDBPyConnection:
    """An in-memory database with the store's tables, empty, and no file access: filters are bound there first.

    The store may be answered by another process (a job writing it), whose connection this viewer cannot
    lock down; binding the filter here first refuses file-reading functions wherever the query then runs.
    """
    columns = store.sql("SELECT table_name, column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position")
    key = tuple((c["table_name"], c["column_name"], c["data_type"]) for c in columns)
    with _probe_lock:
        probe = _probes.get(key)
        if probe is None:
            probe = duckdb.connect(":memory:")
            tables: dict[str, list[str]] = {}
            for c in columns:
                name = c["column_name"].replace('"', '""')
                tables.setdefault(c["table_name"], []).append(f'"{name}" {c["data_type"]}')
            for table, cols in tables.items():
                probe.execute(f'CREATE TABLE "{table}" ({", ".join(cols)})')
            probe.execute("SET enable_external_access = false")
            _probes.clear()
            _probes[key] = probe
        return probe


def _check_where(store, where: str, query: str, params: list[Any]) -> None:
    if not where:
        return
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise ConfigError(f"the WHERE filter does not parse: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ConfigError("the WHERE filter must be one SQL expression (no ';')")
    probe = _schema_probe(store)
    with _probe_lock:
        try:
            probe.execute(query, params).fetchall()
        except duckdb.Error as e:
            raise ConfigError(f"the WHERE filter failed: {one_line(e)}") from None


def browse(store, f: BrowseFilter) -> BrowseResult:
    """One page of tasks and their trajectories (a task without one shows once); errors come back as text."""
    try:
        clauses, params = f.clauses()
        where = " AND ".join(clauses) or "TRUE"
        count_query = f"SELECT count(*) AS n {_BROWSE_FROM} WHERE {where}"
        _check_where(store, f.where, count_query, params)
        total = store.sql(count_query, params)[0]["n"]
        rows = store.sql(
            "SELECT k.task_id, coalesce(t.run_id, k.run_id) AS run_id, k.domain, k.status AS task_status, "
            "coalesce(k.query, e.question) AS query, k.intended_tools, t.traj_id, t.status AS traj_status, t.verdict, "
            "t.origin, t.n_steps, t.answer, coalesce(t.created_at, k.created_at) AS created_at "
            f"{_BROWSE_FROM} LEFT JOIN eval_items e ON e.traj_id = t.traj_id AND k.task_id IS NULL "
            f"WHERE {where} ORDER BY created_at DESC NULLS LAST, k.task_id, t.traj_id LIMIT ? OFFSET ?",
            [*params, PAGE_SIZE, (f.page - 1) * PAGE_SIZE])
        return BrowseResult(rows=rows, total=total)
    except (StoreError, ConfigError) as e:
        return BrowseResult(error=f"{e} (columns: {BROWSE_COLUMNS})")


def filter_options(store) -> dict[str, list[str]]:
    one = lambda q: [r["v"] for r in store.sql(q) if r["v"] is not None]  # noqa: E731
    return {
        "run": one("SELECT run_id AS v FROM (SELECT DISTINCT run_id FROM tasks UNION SELECT DISTINCT run_id FROM trajectories) ORDER BY 1"),
        "status": one("SELECT DISTINCT status AS v FROM tasks UNION SELECT DISTINCT status FROM trajectories ORDER BY 1"),
        "domain": one("SELECT DISTINCT domain AS v FROM tasks ORDER BY 1"),
        "tool": one("SELECT DISTINCT unnest(intended_tools) AS v FROM tasks UNION "
                    "SELECT DISTINCT unnest(list_transform(tool_calls, lambda c: c.name)) FROM steps ORDER BY 1"),
        "verdict": one("SELECT DISTINCT verdict AS v FROM trajectories ORDER BY 1") + ["unverified"],
        "origin": one("SELECT DISTINCT origin AS v FROM trajectories ORDER BY 1"),
    }


def _verdicts(store, kind: str, subject: str) -> list[dict[str, Any]]:
    rows = store.sql("SELECT * FROM verdicts WHERE subject_kind = ? AND subject_id = ? "
                     "ORDER BY verifier, created_at DESC NULLS LAST, verdict_id DESC", [kind, subject])
    seen = set()
    for r in rows:
        r["reasons"] = from_json_text(r["reasons"])
        r["superseded"] = r["verifier"] in seen  # `mmat verify` adds rows: the newest per verifier counts
        seen.add(r["verifier"])
    return rows


def _files(store, task_id: str) -> list[dict[str, Any]]:
    return store.sql("SELECT * FROM files WHERE task_id = ? ORDER BY position NULLS LAST, file_id", [task_id])


def task_page(store, task_id: str) -> dict[str, Any] | None:
    rows = store.sql("SELECT * FROM tasks WHERE task_id = ?", [task_id])
    if not rows:
        return None
    return {
        "task": rows[0], "files": _files(store, task_id), "verdicts": _verdicts(store, "task", task_id),
        "trajectories": store.sql("SELECT traj_id, attempt, controller, status, verdict, n_steps, answer, origin FROM trajectories "
                                  "WHERE task_id = ? ORDER BY attempt, traj_id", [task_id]),
    }


def trajectory_page(store, traj_id: str) -> dict[str, Any] | None:
    rows = store.sql("SELECT * FROM trajectories WHERE traj_id = ?", [traj_id])
    if not rows:
        return None
    traj = rows[0]
    task = store.sql("SELECT * FROM tasks WHERE task_id = ?", [traj["task_id"]])
    steps = store.sql("SELECT * FROM steps WHERE traj_id = ? ORDER BY idx", [traj_id])
    for s in steps:
        for c in s["tool_calls"] or []:
            c["arguments"] = from_json_text(c["arguments"])
    item = store.sql("SELECT eval_run_id, item_key, question, gt FROM eval_items WHERE traj_id = ? LIMIT 1", [traj_id])
    return {
        "traj": traj, "task": task[0] if task else None, "files": _files(store, traj["task_id"]), "steps": steps,
        "verdicts": _verdicts(store, "trajectory", traj_id),
        "task_verdicts": _verdicts(store, "task", traj["task_id"]) if task else [],
        "eval_item": item[0] if item else None,
        "pairs": store.sql("SELECT pair_id, step_idx, rule, chosen_score, rejected_score FROM preference_pairs "
                           "WHERE traj_id = ? ORDER BY step_idx", [traj_id]),
    }


def pairs_page(store, run: str, page: int) -> tuple[list[dict[str, Any]], int]:
    where, params = ("WHERE p.run_id = ?", [run]) if run else ("", [])
    total = store.sql(f"SELECT count(*) AS n FROM preference_pairs p {where}", params)[0]["n"]
    pairs = store.sql(
        f"SELECT p.*, k.query FROM preference_pairs p LEFT JOIN tasks k USING (task_id) {where} "
        "ORDER BY p.created_at DESC NULLS LAST, p.pair_id LIMIT ? OFFSET ?", [*params, PAGE_SIZE // 5, (page - 1) * (PAGE_SIZE // 5)])
    for p in pairs:
        for key in ("chosen", "rejected", "reasons"):
            p[key] = from_json_text(p[key])
        p["context"] = store.sql("SELECT idx, thought, code, observation, error FROM steps WHERE traj_id = ? AND idx < ? ORDER BY idx",
                                 [p["traj_id"], p["step_idx"]])
        p["files"] = _files(store, p["task_id"])
    return pairs, total


def runs_page(store) -> dict[str, Any]:
    runs = store.sql(
        "SELECT r.*, epoch(r.finished_at) - epoch(r.started_at) AS duration_s, "
        "(SELECT count(*) FROM tasks k WHERE k.run_id = r.run_id) AS n_tasks, "
        "(SELECT count(*) FROM trajectories t WHERE t.run_id = r.run_id) AS n_trajectories, "
        "(SELECT count(*) FROM trajectories t WHERE t.run_id = r.run_id AND t.verdict = 'correct') AS n_kept, "
        "(SELECT count(*) FROM preference_pairs p WHERE p.run_id = r.run_id) AS n_pairs, "
        "(SELECT count(*) FROM lm_calls c WHERE c.run_id = r.run_id) AS n_calls, "
        "(SELECT coalesce(sum(cost), 0) FROM lm_calls c WHERE c.run_id = r.run_id) AS cost "
        "FROM runs r ORDER BY r.started_at DESC NULLS LAST")
    for r in runs:
        r["settings"], r["summary"] = from_json_text(r["settings"]), from_json_text(r["summary"])
    return {"runs": runs, "evals": eval_runs(store),
            "optimizations": store.sql("SELECT * FROM optimization_runs ORDER BY created_at DESC NULLS LAST")}


def eval_runs(store) -> list[dict[str, Any]]:
    rows = store.sql("SELECT * FROM eval_runs ORDER BY created_at DESC NULLS LAST")
    for r in rows:
        r["metrics"], r["settings"] = from_json_text(r["metrics"]), from_json_text(r["settings"])
    return rows


def eval_items(store, eval_run_id: str) -> list[dict[str, Any]]:
    rows = store.sql("SELECT * FROM eval_items WHERE eval_run_id = ? ORDER BY try_cast(item_key AS INTEGER) NULLS LAST, item_key, sample_idx",
                     [eval_run_id])
    for r in rows:
        r["ans_acc"], r["gt"] = from_json_text(r.get("ans_acc")) or {}, from_json_text(r.get("gt"))
    return rows
