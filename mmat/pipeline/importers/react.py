"""MAT's MM-Traj and MATRIX's M-TRACE / Pref-X: code-agent (ReAct) conversations as their repositories ship them.

Layouts read (field names as in the public releases):

- **MM-Traj** (MAT, MiniCPM-V fine-tuning JSON): a list of ``{"id", "image", "conversations"}``;
  ``conversations`` are ``{"role", "content"}`` turns (system, user, assistant, ...); ``image`` is one path,
  a list, or a dict ``{"<image_00>": path, ...}`` whose keys are the placeholders in the text.
- **M-TRACE** (MATRIX, LLaMA-Factory sharegpt SFT): ``{"conversations": [{"from": "human"|"gpt", "value"}],
  "images": [...], "system"}``.
- **Pref-X** (MATRIX, LLaMA-Factory sharegpt ranking): as M-TRACE, plus ``chosen`` / ``rejected``
  ``{"from": "gpt", "value", "observation"}`` — the two candidates for the step after the conversation.

Both papers' agents speak the same turn grammar: the first user turn is the task (image placeholders
first, ``Task: ...``); each assistant turn is ``Thought: ... Code: ```py ... ``` <end_action>``; each
following user turn is ``[OUTPUT OF STEP k] Observation: ...`` (or ``Error: ...``), holding placeholders
for images that step produced. Both readers accept ``role/content`` and ``from/value`` turns.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmat.pipeline.importers.items import (BadRow, ImportedFile, ImportedPair, ImportedStep, ImportedTrajectory, ToolNames,
                                           code_tool_calls, final_answer_of, modality_of, parse_react_step,
                                           strip_placeholders)

__all__ = ["read_sft", "read_pairs"]

_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "observation": "user", "tool": "user", "function": "user"}
_OBS_PREFIX = re.compile(r"^\s*(?:\[OUTPUT OF STEP\s*\d+\]\s*(?:->\s*)?)?(Observation|Error)\s*:\s*", re.S)
_RETRY_TAIL = re.compile(r"\n?Now let's retry:.*$", re.S)
_TOOL_LINE = re.compile(r"^\s*-\s*([A-Za-z_]\w*)\s*[:(]", re.M)
_PLACEHOLDER = re.compile(r"<image(?:_\d+)?>")


def _turns(row: dict[str, Any]) -> list[tuple[str, str]]:
    raw = row.get("conversations", row.get("messages"))
    if not isinstance(raw, list) or not raw:
        raise BadRow("no 'conversations' list (is this the named format?)")
    turns = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            raise BadRow(f"turn {i} is not an object")
        role = turn.get("role", turn.get("from"))
        text = turn.get("content", turn.get("value"))
        if role not in _ROLES or not isinstance(text, str):
            raise BadRow(f"turn {i} has no known role/from and text content/value")
        turns.append((_ROLES[role], text))
    return turns


def _image_refs(row: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(paths in order, placeholder -> path) from ``images`` (list) or MiniCPM-V's ``image`` (str | list | dict)."""
    raw = row.get("images", row.get("image"))
    if raw is None:
        return [], {}
    if isinstance(raw, str):
        return [raw], {}
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return list(raw), {}
    if isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
        return list(raw.values()), dict(raw)
    raise BadRow("'images'/'image' is neither a path, a list of paths nor a placeholder -> path object")


class _Images:
    """Hands out a row's images in placeholder order; checks each exists under the root."""

    def __init__(self, row: dict[str, Any], root: Path):
        self.order, self.by_key = _image_refs(row)
        self.root = root
        self.used = 0
        self.names: set[str] = set()

    def take(self, text: str) -> list[ImportedFile]:
        out = []
        for placeholder in _PLACEHOLDER.findall(text):
            if placeholder in self.by_key:
                ref = self.by_key[placeholder]
            elif self.used < len(self.order):
                ref = self.order[self.used]
            else:
                raise BadRow(f"more image placeholders than images ({len(self.order)})")
            self.used += 1
            out.append(self.file(ref))
        return out

    def file(self, ref: str) -> ImportedFile:
        path = Path(ref) if Path(ref).is_absolute() else self.root / ref
        if not path.is_file():
            raise BadRow(f"image {ref} not found (looked in {path.parent}; pass --root)")
        name = path.name
        while name in self.names:  # two images with one name: the agent must still tell them apart
            name = f"{len(self.names)}_{path.name}"
        self.names.add(name)
        return ImportedFile(name=name, path=path, modality=modality_of(name), mime=mimetypes.guess_type(name)[0] or "")

    def check_all_used(self) -> None:
        if self.used != len(self.order) and not self.by_key:
            raise BadRow(f"{len(self.order)} images but {self.used} placeholders")


def _query(text: str) -> str:
    query, _ = strip_placeholders(text)
    query = re.sub(r"^\s*(?:New task:|Task:)\s*", "", query)
    query = "\n".join(line for line in query.splitlines() if not re.match(r"\s*Attachment\s*:", line)).strip()
    if not query:
        raise BadRow("the first user turn holds no task text")
    return query


def _observation(text: str) -> tuple[str, str | None]:
    text, _ = strip_placeholders(text)
    match = _OBS_PREFIX.match(text)
    if match and match.group(1) == "Error":
        error = _RETRY_TAIL.sub("", text[match.end():]).strip()
        return error, error
    return (text[match.end():] if match else text).strip(), None


def _offered(system: str, tools: ToolNames) -> list[str]:
    return list(dict.fromkeys(tools.map(n) for n in _TOOL_LINE.findall(system or "")))


def _step(text: str, tools: ToolNames, offered: set[str]) -> ImportedStep:
    thought, code = parse_react_step(text)
    code = tools.rewrite_code(code)
    return ImportedStep(thought=thought, code=code, tool_calls=code_tool_calls(code, tools, offered))


def _conversation(row: dict[str, Any], root: Path, tools: ToolNames) -> tuple[ImportedTrajectory, _Images, str]:
    from mmat.tools import without_final

    turns = _turns(row)
    system = row.get("system") if isinstance(row.get("system"), str) else ""
    if turns[0][0] == "system":
        system, turns = turns[0][1], turns[1:]
    if not turns or turns[0][0] != "user":
        raise BadRow("the conversation does not start with the user's task")
    images = _Images(row, root)
    if images.order and not any(_PLACEHOLDER.search(text) for _, text in turns):
        files = [images.file(ref) for ref in images.order]  # no placeholders at all: the images go with the task
        images.used = len(images.order)
    else:
        files = images.take(turns[0][1])
    offered = _offered(system, tools)
    steps: list[ImportedStep] = []
    for role, text in turns[1:]:
        if role == "assistant":
            steps.append(_step(text, tools, set(offered)))
        elif not steps:
            raise BadRow("two user turns before the first assistant turn")
        else:
            step_images = images.take(text)
            steps[-1].observation, steps[-1].error = _observation(text)
            steps[-1].images = step_images
    if not offered:  # no tool list in a system prompt: the tools the code called
        offered = without_final(dict.fromkeys(c["name"] for s in steps for c in s.tool_calls))
    for s in steps:
        for call in s.tool_calls:
            call["name"] = tools.map(call["name"])
    traj = ImportedTrajectory(query=_query(turns[0][1]), files=files, steps=steps,
                              tools=without_final(offered), answer=None,
                              multimodal=bool(files) or any(s.images for s in steps))
    return traj, images, turns[-1][0]


def read_sft(rows: list[Any], root: Path, tools: ToolNames, controller: str) -> Iterator[tuple[int, Any]]:
    """MM-Traj / M-TRACE rows -> trajectories (each must end in a final answer)."""
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise BadRow(f"a {type(row).__name__}, not an object (is this the named format?)")
            traj, images, _ = _conversation(row, root, tools)
            images.check_all_used()
            if not traj.steps:
                raise BadRow("no assistant turn")
            traj.answer = final_answer_of(traj.steps[-1].code)
            if traj.answer is None:
                raise BadRow("no answer: the last step does not call final_answer(...)")
            traj.controller = controller
            traj.n_errors = sum(s.error is not None for s in traj.steps)
            yield index, traj
        except BadRow as e:
            yield index, e


def _candidate(raw: Any, tools: ToolNames, offered: set[str], side: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("value", raw.get("content")), str):
        raise BadRow(f"'{side}' is not a {{from, value}} turn")
    step = _step(raw.get("value", raw.get("content")), tools, offered)
    observation, error = _observation(raw.get("observation") or "")
    return {"thought": step.thought, "code": step.code, "observation": observation, "error": error}


def read_pairs(rows: list[Any], root: Path, tools: ToolNames, controller: str) -> Iterator[tuple[int, Any]]:
    """Pref-X rows -> step pairs; the conversation is the context, the chosen step ends the context trajectory."""
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise BadRow(f"a {type(row).__name__}, not an object (is this the named format?)")
            if "chosen" not in row or "rejected" not in row:
                raise BadRow("no 'chosen' and 'rejected' (is this a Pref-X file? use mtrace for SFT data)")
            traj, images, last_role = _conversation(row, root, tools)
            if last_role != "user":
                raise BadRow("the context must end on a user turn (the task or an observation)")
            offered = set(traj.tools)
            chosen = _candidate(row["chosen"], tools, offered, "chosen")
            rejected = _candidate(row["rejected"], tools, offered, "rejected")
            if chosen["code"] == rejected["code"] and chosen["thought"] == rejected["thought"]:
                raise BadRow("chosen and rejected are the same step")
            step_idx = len(traj.steps)
            traj.steps.append(ImportedStep(thought=chosen["thought"], code=chosen["code"],
                                           observation=chosen["observation"], error=chosen["error"],
                                           tool_calls=code_tool_calls(chosen["code"], tools, offered)))
            traj.answer = final_answer_of(chosen["code"])
            traj.status = "answered" if traj.answer is not None else "partial"
            traj.controller = controller
            yield index, ImportedPair(trajectory=traj, step_idx=step_idx, chosen=chosen, rejected=rejected)
        except BadRow as e:
            yield index, e
