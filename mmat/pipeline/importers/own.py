"""mmat's own exports back in: the records every export writes (``mmat_trajectories.jsonl`` / ``mmat_pairs.jsonl``,
or ``trajectories.parquet`` / ``pairs.parquet``), lossless — ids, verdicts and labels kept, so a round trip
rebuilds the same training samples and importing into the store the export came from adds nothing.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.pipeline.importers.items import BadRow, ImportedFile, ImportedPair, ImportedStep, ImportedTrajectory
from mmat.store.export.records import PAIRS_JSONL, PAIRS_PARQUET, RECORD_VERSION, TRAJECTORIES_JSONL, TRAJECTORIES_PARQUET

__all__ = ["record_files", "read_records"]


def record_files(path: Path) -> list[Path]:
    """The record files of an export folder (or the one file named)."""
    if path.is_file():
        return [path]
    found = [path / n for n in (TRAJECTORIES_JSONL, TRAJECTORIES_PARQUET, PAIRS_JSONL, PAIRS_PARQUET) if (path / n).is_file()]
    if not found:
        raise ConfigError(f"{path} holds no mmat records ({TRAJECTORIES_JSONL}, {PAIRS_JSONL} or the parquet ones): "
                          "point at a folder `mmat export` wrote")
    return found


def load_records(path: Path) -> list[Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return [json.loads(r) for r in pq.read_table(path, columns=["record"]).column("record").to_pylist()]
        except (KeyError, ValueError, OSError) as e:
            raise ConfigError(f"{path} is not an mmat parquet export ({e})") from None
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append(BadRow(f"not JSON ({e.msg})"))
    return rows


def _file(ref: str, name: str, base: Path, **kw: Any) -> ImportedFile:
    if ref.startswith("data:"):
        return ImportedFile(name=name, data=base64.b64decode(ref.split(",", 1)[1]), **kw)
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    if not path.is_file():
        raise BadRow(f"file {ref} is missing from the export folder")
    return ImportedFile(name=name, path=path, **kw)


def _trajectory(r: dict[str, Any], base: Path) -> ImportedTrajectory:
    if r.get("mmat_record") != RECORD_VERSION or r.get("kind") != "trajectory":
        raise BadRow(f"not an mmat trajectory record (version {RECORD_VERSION})")
    task = r["task"]
    files = [_file(f["path"], f["name"], base, modality=f["modality"], mime=f.get("mime") or "", caption=f.get("caption"),
                   source=f.get("source") or "user") for f in sorted(r["files"], key=lambda f: (f.get("position") or 0))]
    steps = []
    for s in r["steps"]:
        images = [_file(p, Path(p).name if not p.startswith("data:") else f"step{s['idx']}.png", base,
                        mime=mimetypes.guess_type(p)[0] or "") for p in s.get("images") or []]
        steps.append(ImportedStep(thought=s["thought"] or "", code=s["code"] or "", observation=s["observation"] or "",
                                  error=s.get("error"), images=images, tool_calls=s.get("tool_calls") or [],
                                  duration_ms=s.get("duration_ms")))
    return ImportedTrajectory(
        query=task["query"], files=files, steps=steps, tools=list(r.get("tools") or []), answer=r.get("answer"),
        multimodal=bool(r.get("multimodal")), status=r.get("status") or "answered", verdict=r.get("verdict"),
        controller=r.get("controller"), domain=task.get("domain"), split=task.get("split") or "train",
        task={k: task.get(k) for k in ("original_query", "intended_tools", "answer_type", "expected_answer", "status",
                                       "status_reason")},
        ids={"task_id": r["task_id"], "traj_id": r["traj_id"]}, verdicts=list(r.get("verdicts") or []),
        attempt=r.get("attempt") or 0, n_errors=r.get("n_errors"))


def read_records(rows: list[Any], base: Path) -> Iterator[tuple[int, Any]]:
    for index, r in enumerate(rows):
        try:
            if isinstance(r, BadRow):
                raise r
            if not isinstance(r, dict):
                raise BadRow("not an object")
            if r.get("kind") == "pair":
                p = r["pair"]
                load = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
                yield index, ImportedPair(
                    trajectory=_trajectory(r["trajectory"], base), step_idx=p["step_idx"], chosen=load(p["chosen"]),
                    rejected=load(p["rejected"]), judge=p.get("judge"), chosen_score=p.get("chosen_score"),
                    rejected_score=p.get("rejected_score"), rule=p.get("rule") or "import",
                    reasons=load(p.get("reasons")) or [], pair_id=p["pair_id"])
            else:
                yield index, _trajectory(r, base)
        except (KeyError, TypeError) as e:
            yield index, BadRow(f"not an mmat record (missing {e})")
        except BadRow as e:
            yield index, e
