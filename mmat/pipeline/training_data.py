"""Training data from the store: the selection of what is good enough to train on, and the stored
trajectories and preference pairs rebuilt into the exact conversations the agent saw.

Finetuning and exports both start here: rows selected with SQL are rebuilt into ``AgentStep`` /
``GeneratedFile`` objects and rendered by ``mmat.programs.trajectory_conversation`` — the same
function the agent uses at inference — with the adapter of the model that will be trained, so a
student trains on exactly the prompt it will be served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mmat.errors import ConfigError, StoreError
from mmat.store.export import Conversation, PreferenceRow

__all__ = [
    "TRAINING_SELECTION", "DEFAULT_SFT_WHERE", "Selection", "known_tools", "load_conversations", "load_preference_rows", "load_files", "load_steps",
    "user_selection",
]

# The one definition of "good enough to train on", used by `mmat finetune` and every `mmat export` format:
# verified correct by the verifiers and not labelled incorrect by a person, or labelled correct by a person
# (a person's label overrules the verifiers both ways). "Verified" reads the newest trajectory-verifier and
# rules verdicts (`mmat verify` adds newer ones, e.g. for imported trajectories), else t.verdict as synth set
# it. Evaluation runs' trajectories are never training data.
def _newest(verifier: str) -> str:
    return ("(SELECT v.passed FROM verdicts v WHERE v.subject_kind = 'trajectory' AND v.subject_id = t.traj_id "
            f"AND v.verifier = '{verifier}' ORDER BY v.created_at DESC LIMIT 1)")


TRAINING_SELECTION = (
    f"(coalesce(t.origin, 'synth') <> 'eval' AND coalesce({_newest('label')}, "
    f"coalesce({_newest('trajectory')}, t.verdict = 'correct') AND coalesce({_newest('rules')}, TRUE)))"
)
DEFAULT_SFT_WHERE = TRAINING_SELECTION


@dataclass
class Selection:
    """What a training set was built from: saved next to the adapter."""

    where: str
    n_rows: int
    run_ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def load_files(store, task_id: str) -> list:
    from mmat.programs.files import GeneratedFile

    rows = store.sql(
        "SELECT name, path, modality, mime, source, caption FROM files WHERE task_id = ? ORDER BY position", [task_id])
    return [
        GeneratedFile(name=r["name"], path=store.blob_path(r["path"]), modality=r["modality"], mime=r["mime"] or "",
                      source=r["source"], caption=r["caption"] or "")
        for r in rows
    ]


def load_steps(store, traj_id: str) -> list:
    from mmat.programs.trajectory import AgentStep
    from mmat.sandbox.results import ToolCall

    steps = []
    for r in store.sql("SELECT * FROM steps WHERE traj_id = ? ORDER BY idx", [traj_id]):
        calls = [
            ToolCall(name=c["name"], arguments=json.loads(c["arguments"]) if isinstance(c["arguments"], str) else (c["arguments"] or {}),
                     result=c["result"] or "", duration_ms=c["duration_ms"] or 0.0, error=c["error"])
            for c in (r["tool_calls"] or [])
        ]
        steps.append(AgentStep(
            idx=r["idx"], thought=r["thought"] or "", code=r["code"] or "", observation=r["observation"] or "",
            tool_calls=calls, error=r["error"], images=[str(store.blob_path(p)) for p in (r["images"] or [])],
            duration_ms=r["duration_ms"] or 0.0,
        ))
    return steps


def known_tools(names: Any) -> list[str]:
    """The tools a prompt can describe: imported trajectories may name tools mmat has not got (kept in the store)."""
    from mmat.tools import REGISTRY

    return [n for n in (names or []) if n in REGISTRY]


def user_selection(store, query: str, *, flag: str, columns: str) -> list[dict[str, Any]]:
    """Run a query holding a user's SQL filter; a bad filter is the user's to fix, so say which columns exist."""
    try:
        return store.sql(query)
    except StoreError as e:
        raise ConfigError(f"bad {flag} ({e}); columns: {columns}") from None


def _select(store, where: str) -> list[dict[str, Any]]:
    return user_selection(
        store,
        "SELECT t.traj_id, t.task_id, t.run_id, t.tools, t.multimodal, k.query "
        f"FROM trajectories t JOIN tasks k USING (task_id) WHERE {where} ORDER BY t.traj_id",
        flag="--where", columns="t.* (trajectories), k.* (tasks)",
    )


def load_conversations(store, where: str = DEFAULT_SFT_WHERE, *, model: str, multimodal: bool | None = None) -> tuple[list[Conversation], Selection]:
    """One conversation per selected trajectory, rendered for ``model`` (its adapter, its modality)."""
    from mmat.lm import adapter_for
    from mmat.programs import trajectory_conversation

    adapter = adapter_for(model)
    rows = _select(store, where)
    selection = Selection(where=where, n_rows=len(rows), run_ids=sorted({r["run_id"] for r in rows}))
    conversations = []
    for row in rows:
        steps = load_steps(store, row["traj_id"])
        if not steps:
            selection.skipped.append(f"{row['traj_id']}: no steps")
            continue
        tools = known_tools(row["tools"])
        shown = row["multimodal"] if multimodal is None else multimodal
        messages = trajectory_conversation(row["query"], load_files(store, row["task_id"]), steps, tools, adapter,
                                           multimodal=bool(shown), inline_images=False)
        conversations.append(Conversation(messages=messages, meta={"traj_id": row["traj_id"], "task_id": row["task_id"]}))
    return conversations, selection


def load_preference_rows(store, where: str = "TRUE", *, model: str, multimodal: bool | None = None) -> tuple[list[PreferenceRow], Selection]:
    """Step-level pairs: prompt = the conversation up to the step (earlier chosen steps), then chosen/rejected."""
    from mmat.lm import adapter_for
    from mmat.programs.agent_turns import agent_messages
    from mmat.signatures.agent import CodeAgentStep

    adapter = adapter_for(model)
    pairs = user_selection(
        store,
        "SELECT p.*, k.query, t.tools, t.multimodal, t.run_id FROM preference_pairs p "
        "JOIN tasks k USING (task_id) JOIN trajectories t ON t.traj_id = p.traj_id "
        f"WHERE {where} ORDER BY p.pair_id",
        flag="--where", columns="p.* (preference_pairs), k.* (tasks), t.* (trajectories)",
    )
    selection = Selection(where=where, n_rows=len(pairs), run_ids=sorted({r["run_id"] for r in pairs}))
    out = []
    for pair in pairs:
        steps = load_steps(store, pair["traj_id"])[: pair["step_idx"]]
        shown = pair["multimodal"] if multimodal is None else multimodal
        prompt = agent_messages(pair["query"], load_files(store, pair["task_id"]), steps, known_tools(pair["tools"]), adapter,
                                multimodal=bool(shown), inline_images=False)
        chosen, rejected = (json.loads(pair[k]) if isinstance(pair[k], str) else pair[k] for k in ("chosen", "rejected"))
        render = lambda s: adapter.format_assistant_message_content(CodeAgentStep, {"thought": s["thought"], "code": s["code"]})  # noqa: E731
        out.append(PreferenceRow(prompt=prompt, chosen=render(chosen), rejected=render(rejected),
                                 meta={"pair_id": pair["pair_id"], "rule": pair["rule"]}))
    return out, selection
