"""`mmat import FORMAT PATH`: released trajectories and pairs -> the store, as mmat rows with origin = 'import'.

Formats: ``mmtraj`` (MAT's MM-Traj), ``mtrace`` (MATRIX's M-TRACE), ``prefx`` (MATRIX's Pref-X step pairs),
``gta`` (GTA dialogs as reference trajectories), ``mmat`` (mmat's own exports, lossless). Readers are in
this package; this module hashes, copies images and files into blobs, and writes.

- **Idempotent and resumable**: ids are content hashes of what was imported (mmat records keep their
  own ids), rows already in the store are skipped and never rewritten, and rows are flushed in batches —
  importing twice adds nothing, and a killed import re-run picks up where it stopped.
- **Bad rows** (not the named format, no answer, a missing image, ...) are counted and reported with
  their index; the rest is imported.
- **Tool names** are mapped to mmat's (MAT's names mostly are mmat's; GTA's via ``mmat.eval.toolmap``);
  unknown names are kept as they are and counted. Prompts list only the tools mmat knows.
- Imported trajectories carry no mmat verdict (mmat's own records keep theirs): run
  ``mmat verify --where "t.origin = 'import'"``, or train on them with ``--where "t.origin = 'import'"``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mmat.config import Settings
from mmat.errors import ConfigError
from mmat.ids import content_id
from mmat.pipeline.importers.items import MAT_TOOL_MAP, BadRow, ImportedFile, ImportedPair, ImportedTrajectory, ToolNames
from mmat.store.runs import utcnow
from mmat.store.columns import from_json_text

__all__ = ["IMPORT_FORMATS", "ImportReport", "run_import"]

IMPORT_FORMATS = {
    "mmtraj": "MAT's MM-Traj training JSON (conversations with Thought/Code/Observation turns, image paths)",
    "mtrace": "MATRIX's M-TRACE (LLaMA-Factory sharegpt SFT JSON)",
    "prefx": "MATRIX's Pref-X (LLaMA-Factory sharegpt DPO JSON: conversations + chosen/rejected)",
    "gta": "GTA's dataset.json: dialogs as reference trajectories (split eval)",
    "mmat": "a folder (or records file) written by `mmat export`",
}
_CONTROLLER = {"mmtraj": "import/mm-traj", "mtrace": "import/m-trace", "prefx": "import/pref-x", "gta": "import/gta"}
FLUSH_EVERY = 200  # items per batch: a killed import loses at most one batch, which the re-run redoes
MAX_LISTED = 20


@dataclass
class ImportReport:
    fmt: str
    source: str
    run_id: str
    n_rows: int = 0
    trajectories: int = 0
    pairs: int = 0
    already: int = 0  # rows whose trajectory (or pair) was in the store already
    files: int = 0
    bad: list[tuple[Any, str]] = field(default_factory=list)
    unknown_tools: dict[str, int] = field(default_factory=dict)
    renamed_tools: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.n_rows, "trajectories": self.trajectories, "pairs": self.pairs, "already": self.already,
                "files": self.files, "bad": len(self.bad), "bad_rows": [f"{i}: {r}" for i, r in self.bad[:MAX_LISTED]],
                "unknown_tools": self.unknown_tools, "renamed_tools": self.renamed_tools}


def _read_json_rows(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    rows = []
    for n, line in enumerate(text.splitlines()):  # JSON lines: a bad line is a bad row, not a failed import
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append(_NotJson(f"line {n + 1} is not JSON ({e.msg})"))
    if not rows:
        raise ConfigError(f"{path} is neither a JSON document nor JSON lines")
    return rows


class _NotJson(str):
    pass


def _items(fmt: str, path: Path, root: Path, tools: ToolNames):
    from mmat.pipeline.importers import gta, own, react

    if fmt == "mmat":
        for file in own.record_files(path):
            base = file.parent
            for index, item in own.read_records(own.load_records(file), base):
                yield f"{file.name}:{index}", item
        return
    data = _read_json_rows(path)
    if fmt == "gta":
        if not isinstance(data, dict):
            raise ConfigError(f"{path} is not a GTA dataset.json (an object keyed '0'..'N')")
        yield from gta.read_gta(data, root, tools, _CONTROLLER[fmt])
        return
    if isinstance(data, dict):  # some releases wrap the list
        data = next((v for v in data.values() if isinstance(v, list)), None)
        if data is None:
            raise ConfigError(f"{path} holds no list of rows: is it a {fmt} file?")
    if not isinstance(data, list):
        raise ConfigError(f"{path} holds no list of rows: is it a {fmt} file?")
    rows = [r if not isinstance(r, _NotJson) else None for r in data]
    reader = react.read_pairs if fmt == "prefx" else react.read_sft
    bad_json = {i: r for i, r in enumerate(data) if isinstance(r, _NotJson)}
    for index, item in reader(rows, root, tools, _CONTROLLER[fmt]):
        yield index, BadRow(bad_json[index]) if index in bad_json else item


def _sha(f: ImportedFile) -> str:
    if f.data is not None:
        return hashlib.sha256(f.data).hexdigest()
    h = hashlib.sha256()
    with f.path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _when(value: Any, default: datetime) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return default
    return value or default


class _Writer:
    """Turns items into rows, skipping what the store (or this run) already has."""

    def __init__(self, store, run_id: str, source: str, report: ImportReport):
        self.store, self.run_id, self.source, self.report = store, run_id, source, report
        self.tasks = {r["task_id"] for r in store.sql("SELECT task_id FROM tasks")}
        self.trajs = {r["traj_id"] for r in store.sql("SELECT traj_id FROM trajectories")}
        self.pairs = {r["pair_id"] for r in store.sql("SELECT pair_id FROM preference_pairs")}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.pending = 0

    def _add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def _blob(self, f: ImportedFile) -> tuple[str, str, int]:
        suffix = Path(f.name).suffix.lower() if f.data is not None else f.path.suffix.lower()
        from mmat.store.blobs import safe_suffix

        rel, sha = self.store.put_blob(f.data if f.data is not None else f.path, safe_suffix(Path("x" + suffix)))
        self.report.files += 1
        return rel, sha, len(f.data) if f.data is not None else f.path.stat().st_size

    def ids(self, t: ImportedTrajectory) -> tuple[str, str]:
        if t.ids:
            return t.ids["task_id"], t.ids["traj_id"]
        task_id = content_id("import-task", t.query, [(f.name, _sha(f)) for f in t.files])
        steps = [(s.thought, s.code, s.observation, s.error, [_sha(i) for i in s.images]) for s in t.steps]
        return task_id, content_id("import-traj", task_id, steps)

    def trajectory(self, t: ImportedTrajectory) -> tuple[str, str, bool]:
        """Rows of one trajectory (and its task, when new); returns (task_id, traj_id, was it new)."""
        task_id, traj_id = self.ids(t)
        if traj_id in self.trajs:
            return task_id, traj_id, False
        now = utcnow()
        if task_id not in self.tasks:
            self.tasks.add(task_id)
            task = t.task
            self._add("tasks", {
                "task_id": task_id, "run_id": self.run_id, "seed_idx": None, "split": t.split, "domain": t.domain,
                "query": t.query, "original_query": task.get("original_query") or t.query,
                "intended_tools": task.get("intended_tools") or [], "file_needs": None,
                "answer_type": task.get("answer_type"), "expected_answer": task.get("expected_answer"),
                "status": task.get("status") or ("solved" if t.answer is not None else "imported"),
                "status_reason": task.get("status_reason"), "created_at": now, "source": self.source})
            for i, f in enumerate(t.files):
                rel, sha, size = self._blob(f)
                self._add("files", {"file_id": content_id(task_id, "file", i), "task_id": task_id, "position": i,
                                    "name": f.name, "path": rel, "sha256": sha, "modality": f.modality, "mime": f.mime,
                                    "bytes": size, "source": f.source, "caption": f.caption, "created_at": now})
        self.trajs.add(traj_id)
        self._add("trajectories", {
            "traj_id": traj_id, "task_id": task_id, "run_id": self.run_id, "attempt": t.attempt,
            "controller": t.controller, "answer": t.answer, "status": t.status, "verdict": t.verdict,
            "n_steps": len(t.steps), "n_errors": t.n_errors if t.n_errors is not None else sum(s.error is not None for s in t.steps),
            "tools": t.tools, "multimodal": t.multimodal, "origin": "import", "created_at": now, "source": self.source})
        for idx, s in enumerate(t.steps):
            self._add("steps", {
                "traj_id": traj_id, "idx": idx, "thought": s.thought, "code": s.code, "observation": s.observation,
                "error": s.error, "images": [self._blob(i)[0] for i in s.images], "duration_ms": s.duration_ms,
                "tool_calls": [{**c, "arguments": from_json_text(c.get("arguments"))} for c in s.tool_calls]})
        for i, v in enumerate(t.verdicts):
            self._add("verdicts", {
                "verdict_id": content_id("verdict", "import", traj_id, v["verifier"], i), "subject_kind": "trajectory",
                "subject_id": traj_id, "verifier": v["verifier"], "model": v.get("model"), "passed": v.get("passed"),
                "verdict": v.get("verdict"), "score": v.get("score"), "reasons": from_json_text(v.get("reasons")),
                "rewritten_query": None, "created_at": _when(v.get("created_at"), now)})
        self.pending += 1
        return task_id, traj_id, True

    def pair(self, p: ImportedPair) -> bool:
        task_id, traj_id, _ = self.trajectory(p.trajectory)
        pair_id = p.pair_id or content_id("import-pair", traj_id, p.step_idx, p.chosen, p.rejected)
        if pair_id in self.pairs:
            return False
        self.pairs.add(pair_id)
        self._add("preference_pairs", {
            "pair_id": pair_id, "task_id": task_id, "traj_id": traj_id, "step_idx": p.step_idx, "run_id": self.run_id,
            "chosen": p.chosen, "rejected": p.rejected, "judge": p.judge, "chosen_score": p.chosen_score,
            "rejected_score": p.rejected_score, "rule": p.rule, "reasons": p.reasons, "created_at": utcnow(),
            "source": self.source})
        self.pending += 1
        return True

    def flush(self) -> None:
        # children before parents: a row is taken as present by its task/trajectory/pair id, so those go last
        for table in ("files", "steps", "verdicts", "tasks", "trajectories", "preference_pairs"):
            if self.rows.get(table):
                self.store.writer.put(table, self.rows[table])
        self.store.writer.flush()
        self.rows, self.pending = {}, 0


def run_import(settings: Settings, fmt: str, path: Path, *, root: Path | None = None,
               command: str | None = None) -> ImportReport:
    """Import ``path`` (a file, or an export folder for ``mmat``) in ``fmt``; returns what was imported and skipped.

    Recorded as an ``import`` run (one per format and source: importing again resumes it); a failure or
    Ctrl-C midway is recorded with what was imported so far (flushed batches stay; a rerun skips them)."""
    from mmat.store import open_store
    from mmat.store import run_lifecycle

    if fmt not in IMPORT_FORMATS:
        raise ConfigError(f"unknown import format '{fmt}': choose one of {', '.join(IMPORT_FORMATS)}.")
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    root = Path(root) if root else (path if path.is_dir() else path.parent)
    source = str(path.resolve())
    from mmat.eval.toolmap import GTA_TOOL_MAP

    mapping = {k: v for k, v in GTA_TOOL_MAP.items() if v} if fmt == "gta" else ({} if fmt == "mmat" else MAT_TOOL_MAP)
    tools = ToolNames(mapping)
    with open_store(settings) as store, run_lifecycle(
            store, "import", {"format": fmt, "source": source}, command or f"mmat import {fmt} {path}",
            run_id=content_id("run", "import", fmt, source)) as run:
        report = ImportReport(fmt=fmt, source=source, run_id=run.run_id)
        writer = _Writer(store, run.run_id, source, report)

        def flush() -> None:
            writer.flush()
            report.unknown_tools, report.renamed_tools = dict(tools.unknown), dict(tools.renamed)
            run.summary = report.summary()  # what is stored so far: kept if the run fails later

        for index, item in _items(fmt, path, root, tools):
            report.n_rows += 1
            if isinstance(item, BadRow):
                report.bad.append((index, str(item)))
                continue
            try:
                traj = item.trajectory if isinstance(item, ImportedPair) else item
                if fmt != "mmat":
                    tools.count_unknown(set(traj.tools) | {c["name"] for s in traj.steps for c in s.tool_calls})
                if isinstance(item, ImportedPair):
                    new = writer.pair(item)
                    report.pairs += int(new)
                else:
                    new = writer.trajectory(item)[2]
                    report.trajectories += int(new)
            except (OSError, ConfigError) as e:
                report.bad.append((index, str(e)))
                continue
            report.already += int(not new)
            if writer.pending >= FLUSH_EVERY:
                flush()
        flush()
    return report
