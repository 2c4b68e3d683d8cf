"""mmat's own lossless records of trajectories and pairs: what ``mmat import mmat`` reads back.

A trajectory record holds everything the agent's prompt is rebuilt from — the task, its files in the
order the agent saw them, the tools offered, whether images were shown, each step (thought, code,
observation, error, the images it produced, its tool calls) — plus the verdicts and labels. File
references follow the export's ``--images`` mode (relative paths under the export folder, or data
URLs). A pair record is the pair plus the record of the trajectory whose steps form its context.

``parquet`` exports are these records as Parquet rows (``trajectories.parquet`` / ``pairs.parquet``);
every other format writes them as ``mmat_trajectories.jsonl`` / ``mmat_pairs.jsonl`` beside its rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmat.store.export.media import MediaSink

__all__ = ["RECORD_VERSION", "TRAJECTORIES_JSONL", "PAIRS_JSONL", "TRAJECTORIES_PARQUET", "PAIRS_PARQUET",
           "trajectory_records", "pair_records", "write_records"]

RECORD_VERSION = 1
TRAJECTORIES_JSONL, PAIRS_JSONL = "mmat_trajectories.jsonl", "mmat_pairs.jsonl"
TRAJECTORIES_PARQUET, PAIRS_PARQUET = "trajectories.parquet", "pairs.parquet"

_TRAJ_COLUMNS = ("traj_id", "task_id", "run_id", "attempt", "controller", "answer", "status", "verdict", "n_steps",
                 "n_errors", "tools", "multimodal", "origin")
_TASK_COLUMNS = ("query", "original_query", "domain", "split", "intended_tools", "answer_type", "expected_answer")


def _json_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _columns(store, table: str) -> set[str]:
    return {r["column_name"] for r in store.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table])}


def trajectory_records(store, traj_ids: list[str], sink: MediaSink) -> list[dict[str, Any]]:
    """One record per trajectory, in the order of ``traj_ids``."""
    if not traj_ids:
        return []
    source = "t.source" if "source" in _columns(store, "trajectories") else "NULL"
    rows = store.sql(
        f"SELECT {', '.join('t.' + c for c in _TRAJ_COLUMNS)}, {source} AS source_path, "
        f"{', '.join('k.' + c for c in _TASK_COLUMNS)}, k.status AS task_status, k.status_reason "
        "FROM trajectories t JOIN tasks k USING (task_id) WHERE t.traj_id IN (SELECT unnest(?))", [traj_ids])
    by_id = {r["traj_id"]: r for r in rows}
    out = []
    for traj_id in traj_ids:
        r = by_id[traj_id]
        files = store.sql("SELECT name, path, sha256, modality, mime, source, caption, position FROM files "
                          "WHERE task_id = ? ORDER BY position, name", [r["task_id"]])
        steps = store.sql("SELECT idx, thought, code, observation, error, images, duration_ms, tool_calls FROM steps "
                          "WHERE traj_id = ? ORDER BY idx", [traj_id])
        verdicts = store.sql("SELECT verifier, model, passed, verdict, score, reasons, created_at FROM verdicts "
                             "WHERE subject_kind = 'trajectory' AND subject_id = ? ORDER BY created_at, verifier", [traj_id])
        out.append({
            "mmat_record": RECORD_VERSION, "kind": "trajectory",
            **{c: r[c] for c in _TRAJ_COLUMNS}, "tools": list(r["tools"] or []), "source": r["source_path"],
            "task": {"query": r["query"], "original_query": r["original_query"], "domain": r["domain"],
                     "split": r["split"], "intended_tools": list(r["intended_tools"] or []),
                     "answer_type": r["answer_type"], "expected_answer": r["expected_answer"],
                     "status": r["task_status"], "status_reason": r["status_reason"]},
            "files": [{**{k: f[k] for k in ("name", "sha256", "modality", "mime", "source", "caption", "position")},
                       "path": sink.ref(store.blob_path(f["path"]), "images" if f["modality"] == "image" else "files")}
                      for f in files],
            "steps": [{"idx": s["idx"], "thought": s["thought"], "code": s["code"], "observation": s["observation"],
                       "error": s["error"], "duration_ms": s["duration_ms"],
                       "images": [sink.ref(store.blob_path(p)) for p in (s["images"] or [])],
                       "tool_calls": [{**c, "arguments": _json_text(c["arguments"])} for c in (s["tool_calls"] or [])]}
                      for s in steps],
            "verdicts": [{**v, "reasons": _json_text(v["reasons"]),
                          "created_at": v["created_at"].isoformat() if v["created_at"] else None} for v in verdicts],
        })
    return out


def pair_records(store, pair_ids: list[str], sink: MediaSink) -> list[dict[str, Any]]:
    """One record per pair: the pair's fields and its context trajectory's record."""
    if not pair_ids:
        return []
    pairs = {p["pair_id"]: p for p in store.sql(
        "SELECT pair_id, task_id, traj_id, step_idx, chosen, rejected, judge, chosen_score, rejected_score, rule, reasons "
        "FROM preference_pairs WHERE pair_id IN (SELECT unnest(?))", [pair_ids])}
    trajs = {t["traj_id"]: t for t in trajectory_records(store, sorted({p["traj_id"] for p in pairs.values()}), sink)}
    return [{"mmat_record": RECORD_VERSION, "kind": "pair",
             "pair": {k: (_json_text(v) if k in ("chosen", "rejected", "reasons") else v) for k, v in pairs[i].items()},
             "trajectory": trajs[pairs[i]["traj_id"]]} for i in pair_ids]


def write_records(records: list[dict[str, Any]], out_dir: Path, *, parquet: bool, pairs: bool) -> str:
    """Write records as Parquet rows (the ``parquet`` format) or as the JSONL sidecar; returns the file name."""
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = PAIRS_PARQUET if pairs else TRAJECTORIES_PARQUET
        # Nested JSON text (the same values as the JSONL) keeps one schema whatever the tool arguments look like.
        table = pa.Table.from_pylist([{"record": json.dumps(r, ensure_ascii=False, default=str), **_flat(r)} for r in records])
        pq.write_table(table, out_dir / name)
        return name
    name = PAIRS_JSONL if pairs else TRAJECTORIES_JSONL
    with (out_dir / name).open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return name


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """Queryable top-level columns next to the full record (e.g. ``SELECT verdict, count(*) FROM 'trajectories.parquet'``)."""
    traj = record["trajectory"] if record["kind"] == "pair" else record
    flat = {c: traj.get(c) for c in ("traj_id", "task_id", "controller", "verdict", "n_steps", "multimodal", "origin")}
    flat |= {"query": traj["task"]["query"], "domain": traj["task"]["domain"], "answer": traj.get("answer")}
    if record["kind"] == "pair":
        flat |= {"pair_id": record["pair"]["pair_id"], "step_idx": record["pair"]["step_idx"], "rule": record["pair"]["rule"]}
    return flat
