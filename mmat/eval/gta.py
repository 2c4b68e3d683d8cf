"""Load a GTA-format benchmark file (GTA's ``dataset.json``) into EvalItems.

Format: a JSON object keyed "0".."N"; each item is
``{tools: [{name, description, inputs, outputs}], files: [{type, path, url}], dialogs: [...], gt_answer}``.
The dialog alternates a user message, assistant turns with ``tool_calls`` and tool results, and ends with
the assistant's answer; the question is the first user message and the reference tool chain is the
sequence of tool names the assistant called. ``gt_answer`` is ``{whitelist, blacklist}`` (objective), a
list of strings (subjective) or null (image generation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.eval.items import AnswerKind, EvalItem, LoadReport, SkippedItem
from mmat.eval.toolmap import map_gta_tool

__all__ = ["load_gta"]


class _Malformed(ValueError):
    """One item cannot be used; the message is the reason shown to the user."""


def load_gta(path: Path | str, *, data_dir: Path | str | None = None) -> LoadReport:
    """Read a GTA dataset file; item files resolve against ``data_dir`` (default: the file's directory)."""
    path = Path(path)
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a GTA benchmark file: expected a JSON object keyed '0'..'N', got {type(raw).__name__}.")
    base = Path(data_dir) if data_dir is not None else path.parent
    report = LoadReport(source=str(path))
    for key in sorted(raw, key=_key_order):
        try:
            item, unknown = _parse_item(str(key), raw[key], base)
        except _Malformed as e:
            report.skipped.append(SkippedItem(key=str(key), reason=str(e)))
            continue
        report.items.append(item)
        for name in unknown:
            keys = report.unknown_tools.setdefault(name, [])
            if item.key not in keys:
                keys.append(item.key)
    return report


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"benchmark file {path} does not exist: check the path (GTA ships it as dataset.json).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"benchmark file {path} is not valid JSON ({e}): re-download or fix it.") from None


def _key_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if str(key).isdigit() else (1, str(key))


def _parse_item(key: str, raw: Any, base: Path) -> tuple[EvalItem, list[str]]:
    if not isinstance(raw, dict):
        raise _Malformed(f"item is a {type(raw).__name__}, not an object")
    dialogs = raw.get("dialogs")
    if not isinstance(dialogs, list) or not dialogs:
        raise _Malformed("no dialogs")
    question = _question(dialogs)
    unknown: list[str] = []
    tools = _available_tools(raw.get("tools", []), unknown)
    gold = _gold_tool_calls(dialogs, unknown)
    files = _files(raw.get("files", []), base)
    if "gt_answer" not in raw:
        raise _Malformed("no gt_answer field (use null for image-generation items)")
    gt, kind = _gt(raw["gt_answer"])
    item = EvalItem(key=key, question=question, files=files, tools=tools, gold_tool_calls=gold, gt=gt, answer_kind=kind)
    return item, unknown


def _question(dialogs: list[Any]) -> str:
    for turn in dialogs:
        if isinstance(turn, dict) and turn.get("role") == "user":
            content = turn.get("content")
            if isinstance(content, str) and content.strip():
                return content
            raise _Malformed("first user message has no text content")
    raise _Malformed("no user message in dialogs")


def _available_tools(raw_tools: Any, unknown: list[str]) -> list[str]:
    if not isinstance(raw_tools, list):
        raise _Malformed("tools is not a list")
    names: list[str] = []
    for tool in raw_tools:
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not name:
            raise _Malformed(f"tool entry without a name: {tool!r}")
        mmat_name = _map(name, unknown)
        if mmat_name is not None and mmat_name not in names:
            names.append(mmat_name)
    return names


def _gold_tool_calls(dialogs: list[Any], unknown: list[str]) -> list[str]:
    calls: list[str] = []
    for turn in dialogs:
        if not isinstance(turn, dict) or turn.get("role") != "assistant":
            continue
        for call in turn.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                raise _Malformed(f"assistant tool call without a function name: {call!r}")
            known, mmat_name = map_gta_tool(name)
            if not known:
                _map(name, unknown)
                calls.append(name)  # kept as GTA names it: an agent cannot match it, and recall shows that
            elif mmat_name is not None:
                calls.append(mmat_name)
    return calls


def _map(name: str, unknown: list[str]) -> str | None:
    known, mmat_name = map_gta_tool(name)
    if not known and name not in unknown:
        unknown.append(name)
    return mmat_name


def _files(raw_files: Any, base: Path) -> list[Path]:
    if not isinstance(raw_files, list):
        raise _Malformed("files is not a list")
    paths: list[Path] = []
    for entry in raw_files:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel:
            raise _Malformed(f"file entry without a path: {entry!r}")
        resolved = (base / rel).resolve()
        if not resolved.is_file():
            raise _Malformed(f"file not found: {resolved} (pass the directory holding GTA's files as data_dir)")
        paths.append(resolved)
    return paths


def _gt(raw: Any) -> tuple[Any, AnswerKind]:
    if raw is None:
        return None, "none"
    if isinstance(raw, list):
        if not raw or not all(isinstance(s, str) for s in raw):
            raise _Malformed("subjective gt_answer must be a non-empty list of strings")
        return raw, "subjective"
    if isinstance(raw, dict):
        whitelist = _alias_groups(raw.get("whitelist"), "whitelist")
        if not whitelist:
            raise _Malformed("gt_answer.whitelist is empty")
        blacklist = _alias_groups(raw.get("blacklist"), "blacklist") if raw.get("blacklist") is not None else None
        return {"whitelist": whitelist, "blacklist": blacklist}, "whitelist"
    raise _Malformed(f"gt_answer is a {type(raw).__name__}: expected an object, a list of strings or null")


def _alias_groups(raw: Any, field: str) -> list[list[str]]:
    if not isinstance(raw, list):
        raise _Malformed(f"gt_answer.{field} must be a list of alias lists")
    groups: list[list[str]] = []
    for group in raw:
        if not isinstance(group, list) or not group:
            raise _Malformed(f"gt_answer.{field} has an empty or non-list alias group: {group!r}")
        aliases: list[str] = []
        for alias in group:
            # GTA's file holds some numeric aliases as JSON numbers; scoring is textual, so keep their text.
            if isinstance(alias, bool) or not isinstance(alias, (str, int, float)):
                raise _Malformed(f"gt_answer.{field} alias {alias!r} is not text")
            text = alias if isinstance(alias, str) else json.dumps(alias)
            if not text.strip():
                raise _Malformed(f"gt_answer.{field} has an empty alias")
            aliases.append(text)
        groups.append(aliases)
    return groups
