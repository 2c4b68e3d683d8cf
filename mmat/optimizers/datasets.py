"""Train and validation sets from the store, as ``dspy.Example``s each program's target takes.

A set is chosen by SQL over the store (``--trainset`` / ``--valset``). The SQL selects *subjects*; the
rest is looked up here, so a selection stays short (``select task_id from tasks where domain = 'cooking'``):

=====================  ===========================  ==========================================
program                the SQL returns              default selection
=====================  ===========================  ==========================================
query_generator        ``domain`` (+ ``tools``)     every domain with tasks, with their tools
file_generator         ``task_id``                  tasks that need a non-image file
agent                  ``task_id``                  solved tasks
query_file_verifier    ``task_id``                  tasks labelled with ``mmat label``
trajectory_verifier    ``traj_id``                  trajectories labelled with ``mmat label``
=====================  ===========================  ==========================================

Without ``--valset`` a seeded share of the training selection is held out for validation (a single
row is used for both, and the summary says so).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, ValidationError

from mmat.config import Settings
from mmat.errors import ConfigError, StoreError
from mmat.programs.files import GeneratedFile
from mmat.programs.trajectory import AgentStep, Trajectory
from mmat.sandbox.results import ToolCall
from mmat.signatures.queries import QuerySpec

__all__ = ["DatasetSpec", "DATASETS", "Sets", "load_examples", "build_sets", "VAL_FRACTION"]

log = logging.getLogger(__name__)

VAL_FRACTION = 0.3


class DatasetSpec(BaseModel):
    """How one program's examples come out of the store."""

    model_config = ConfigDict(frozen=True)

    id_column: str
    default_sql: str
    inputs: tuple[str, ...]
    requirement: str  # what a selected row must have to become an example
    empty_hint: str


_NON_IMAGE_NEEDS = "len(list_filter(json_extract_string(file_needs, '$[*].modality'), lambda m: m <> 'image')) > 0"

DATASETS: dict[str, DatasetSpec] = {
    "query_generator": DatasetSpec(
        id_column="domain",
        default_sql=("SELECT domain, list_sort(list_distinct(flatten(list(intended_tools)))) AS tools FROM tasks "
                     "WHERE domain IS NOT NULL AND len(intended_tools) > 0 GROUP BY domain ORDER BY domain"),
        inputs=("domain", "tools", "examples"),
        requirement="names a known domain",
        empty_hint="no domains with tasks in the store: run `mmat synth` first, or pass --trainset \"select 'cooking' as domain\"",
    ),
    "file_generator": DatasetSpec(
        id_column="task_id",
        default_sql=f"SELECT task_id FROM tasks WHERE file_needs IS NOT NULL AND {_NON_IMAGE_NEEDS} ORDER BY task_id",
        inputs=("spec",),
        requirement="is a stored task",
        empty_hint="no tasks that need a non-image file: run `mmat synth` first",
    ),
    "agent": DatasetSpec(
        id_column="task_id",
        default_sql="SELECT task_id FROM tasks WHERE status = 'solved' ORDER BY task_id",
        inputs=("task", "files", "tools"),
        requirement="is a stored task",
        empty_hint="no solved tasks in the store: run `mmat synth` first, or select tasks with --trainset",
    ),
    "query_file_verifier": DatasetSpec(
        id_column="task_id",
        default_sql=("SELECT subject_id AS task_id FROM verdicts WHERE verifier = 'label' AND subject_kind = 'task' "
                     "ORDER BY subject_id"),
        inputs=("query", "intended_tools", "files"),
        requirement="is a task labelled with `mmat label`",
        empty_hint="no labelled tasks: run `mmat label` first (export a sheet, fill in the label column, import it)",
    ),
    "trajectory_verifier": DatasetSpec(
        id_column="traj_id",
        default_sql=("SELECT subject_id AS traj_id FROM verdicts WHERE verifier = 'label' AND subject_kind = 'trajectory' "
                     "ORDER BY subject_id"),
        inputs=("query", "files", "trajectory", "expected_answer"),
        requirement="is a trajectory labelled with `mmat label`",
        empty_hint="no labelled trajectories: run `mmat label` first (export a sheet, fill in the label column, import it)",
    ),
}


class Sets(BaseModel):
    """The examples an optimization uses."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    train: list[Any]
    val: list[Any]
    val_from_train: bool = False
    skipped: int = 0


# --- lookups -----------------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _one(store: Any, sql: str, key: str) -> dict[str, Any] | None:
    rows = store.sql(sql, [key])
    return rows[0] if rows else None


def task_files(store: Any, task_id: str) -> list[GeneratedFile]:
    """A task's stored files, pointing at their blobs (the agent copies them under their names)."""
    rows = store.sql("SELECT name, path, modality, mime, source, caption FROM files WHERE task_id = ? ORDER BY file_id",
                     [task_id])
    return [GeneratedFile(name=r["name"], path=store.blob_path(r["path"]), modality=r["modality"] or "document",
                          mime=r["mime"] or "application/octet-stream", source=r["source"] or "generated",
                          caption=r["caption"] or "") for r in rows]


def _label(store: Any, kind: str, subject_id: str) -> dict[str, Any] | None:
    rows = store.sql("SELECT passed, verdict, reasons FROM verdicts WHERE verifier = 'label' AND subject_kind = ? "
                     "AND subject_id = ?", [kind, subject_id])
    row = rows[0] if rows else None
    if row is None or row["passed"] is None:
        return None
    reasons = _json(row["reasons"]) or []
    return {"passed": bool(row["passed"]), "label": row["verdict"], "note": "; ".join(map(str, reasons)) or None}


def _task(store: Any, task_id: str) -> dict[str, Any] | None:
    return _one(store, "SELECT task_id, query, intended_tools, file_needs, answer_type, expected_answer, domain "
                       "FROM tasks WHERE task_id = ?", task_id)


def _spec(task: dict[str, Any]) -> QuerySpec:
    return QuerySpec(query=task["query"], intended_tools=list(task["intended_tools"] or []),
                     file_needs=_json(task["file_needs"]) or [], expected_answer_type=task["answer_type"],
                     expected_answer=task["expected_answer"])


def _trajectory(store: Any, traj_id: str, row: dict[str, Any]) -> Trajectory:
    steps = []
    for s in store.sql("SELECT * FROM steps WHERE traj_id = ? ORDER BY idx", [traj_id]):
        calls = [ToolCall(name=c["name"], arguments=_json(c["arguments"]) or {}, result=c["result"] or "",
                          duration_ms=c["duration_ms"] or 0.0, error=c["error"]) for c in (s["tool_calls"] or [])]
        steps.append(AgentStep(idx=s["idx"], thought=s["thought"] or "", code=s["code"] or "",
                               observation=s["observation"] or "", tool_calls=calls, error=s["error"],
                               images=[str(store.blob_path(p)) for p in (s["images"] or [])],
                               duration_ms=s["duration_ms"] or 0.0))
    status = row["status"] if row["status"] in ("answered", "fallback", "error_limit") else "fallback"
    return Trajectory(steps=steps, answer=row["answer"], status=status, n_errors=row["n_errors"] or 0)


# --- one example per selected row --------------------------------------------------------------------------
def _query_generator_example(store: Any, row: dict[str, Any], index: int, settings: Settings) -> dspy.Example | None:
    from mmat.programs.seeds import load_domains, make_seed

    domains = {d.name: d for d in load_domains()}
    name = row["domain"]
    if name not in domains:
        raise ConfigError(f"unknown domain {name!r} in the selected rows: choose from {', '.join(sorted(domains))}")
    tools = _json(row.get("tools"))
    if not tools:
        from mmat.tools import agent_tools

        tools = agent_tools(settings)
    seed = make_seed(index, tools=list(tools), rng_seed=settings.seed, domains=[domains[name]])
    return dspy.Example(subject_id=name, domain=seed.domain.render(), tools=list(tools),
                        examples=seed.examples).with_inputs("domain", "tools", "examples")


def _file_generator_example(store: Any, row: dict[str, Any], index: int, settings: Settings) -> dspy.Example | None:
    task = _task(store, row["task_id"])
    if task is None:
        return None
    return dspy.Example(subject_id=task["task_id"], spec=_spec(task)).with_inputs("spec")


def _agent_example(store: Any, row: dict[str, Any], index: int, settings: Settings) -> dspy.Example | None:
    task = _task(store, row["task_id"])
    if task is None:
        return None
    tools = list(task["intended_tools"] or [])
    if not tools:
        from mmat.tools import agent_tools

        tools = agent_tools(settings)
    return dspy.Example(subject_id=task["task_id"], task=task["query"], files=task_files(store, task["task_id"]),
                        tools=tools, expected_answer=task["expected_answer"]).with_inputs("task", "files", "tools")


def _query_file_verifier_example(store: Any, row: dict[str, Any], index: int, settings: Settings) -> dspy.Example | None:
    task = _task(store, row["task_id"])
    label = _label(store, "task", row["task_id"])
    if task is None or label is None:
        return None
    return dspy.Example(subject_id=task["task_id"], query=task["query"], intended_tools=list(task["intended_tools"] or []),
                        files=task_files(store, task["task_id"]), **label).with_inputs("query", "intended_tools", "files")


def _trajectory_verifier_example(store: Any, row: dict[str, Any], index: int, settings: Settings) -> dspy.Example | None:
    traj_id = row["traj_id"]
    traj = _one(store, "SELECT traj_id, task_id, answer, status, n_errors FROM trajectories WHERE traj_id = ?", traj_id)
    label = _label(store, "trajectory", traj_id)
    task = _task(store, traj["task_id"]) if traj is not None else None
    if traj is None or task is None or label is None:
        return None
    return dspy.Example(
        subject_id=traj_id, query=task["query"], files=task_files(store, task["task_id"]),
        trajectory=_trajectory(store, traj_id, traj), expected_answer=task["expected_answer"], **label,
    ).with_inputs("query", "files", "trajectory", "expected_answer")


_BUILDERS: dict[str, Callable[..., dspy.Example | None]] = {
    "query_generator": _query_generator_example,
    "file_generator": _file_generator_example,
    "agent": _agent_example,
    "query_file_verifier": _query_file_verifier_example,
    "trajectory_verifier": _trajectory_verifier_example,
}


def _spec_for(program: str) -> DatasetSpec:
    if program not in DATASETS:
        raise ConfigError(f"unknown program {program!r}: choose from {', '.join(DATASETS)}")
    return DATASETS[program]


def load_examples(store: Any, program: str, sql: str | None, *, settings: Settings, flag: str = "--trainset") -> tuple[list[dspy.Example], int]:
    """The examples ``sql`` (or the program's default selection) picks; returns (examples, rows skipped).

    Rows whose subject is gone, unlabelled (verifiers) or does not make a valid spec are skipped.
    """
    spec = _spec_for(program)
    try:
        rows = store.sql(sql or spec.default_sql)
    except StoreError as e:
        raise ConfigError(f"{flag} query failed ({e}); fix the SQL") from None
    if rows and spec.id_column not in rows[0]:
        raise ConfigError(f"{flag} for {program} must return a {spec.id_column} column; it returned: {', '.join(rows[0])}")
    build = _BUILDERS[program]
    examples, skipped, seen = [], 0, set()
    for index, row in enumerate(rows):
        key = row[spec.id_column]
        if key is None or key in seen:
            continue
        seen.add(key)
        try:
            example = build(store, row, index, settings)
        except ValidationError as e:
            log.warning("skipping %s %s: it does not make a valid example (%s)", spec.id_column, key, e.errors()[0]["msg"])
            example = None
        if example is None:
            skipped += 1
            continue
        examples.append(example)
    return examples, skipped


def _empty(program: str, sql: str | None, flag: str) -> ConfigError:
    spec = _spec_for(program)
    if sql:
        return ConfigError(f"{flag} selected no usable {program} examples: {sql!r} returned no {spec.id_column} that "
                           f"{spec.requirement}; change the SQL")
    return ConfigError(spec.empty_hint)


def build_sets(store: Any, program: str, *, settings: Settings, trainset_sql: str | None = None,
               valset_sql: str | None = None) -> Sets:
    """Train and validation examples; ConfigError naming the fix when either comes out empty."""
    train, skipped = load_examples(store, program, trainset_sql, settings=settings, flag="--trainset")
    if valset_sql is not None:
        val, skipped_val = load_examples(store, program, valset_sql, settings=settings, flag="--valset")
        if not val:
            raise _empty(program, valset_sql, "--valset")
        if trainset_sql is None:  # the default selection minus what the valset took
            held = {e.subject_id for e in val}
            train = [e for e in train if e.subject_id not in held]
        if not train:
            raise _empty(program, trainset_sql, "--trainset")
        return Sets(train=train, val=val, skipped=skipped + skipped_val)
    if not train:
        raise _empty(program, trainset_sql, "--trainset")
    if len(train) == 1:
        return Sets(train=train, val=list(train), val_from_train=True, skipped=skipped)
    shuffled = list(train)
    random.Random(settings.seed).shuffle(shuffled)
    n_val = max(1, round(len(shuffled) * VAL_FRACTION))
    return Sets(train=shuffled[n_val:], val=shuffled[:n_val], skipped=skipped)

