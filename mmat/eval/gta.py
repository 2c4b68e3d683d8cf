"""Load a GTA-format benchmark file (GTA's ``dataset.json``) into EvalItems.

Format: a JSON object keyed "0".."N"; each item is
``{tools: [{name, description, inputs, outputs}], files: [{type, path, url}], dialogs: [...], gt_answer}``.
The dialog alternates a user message, assistant turns with ``tool_calls`` and tool results, and ends with
the assistant's answer; the question is the first user message and the reference tool chain is the
sequence of tool names the assistant called. ``gt_answer`` is ``{whitelist, blacklist}`` (objective), a
list of strings (subjective) or null (image generation).

Agent-X's ``dataset.json`` uses the same format with three differences this loader accepts: a user turn may
be a list of blocks (``{"type": "text", "text": ...}``, ``{"type": "image", "image": "image/AgentX_13.jpg"}``),
its ``image/`` paths live in the data set's ``files/`` folder, and some files are videos or images whose bytes
differ from their extension (see :mod:`mmat.eval.media`; prepared copies go under ``media_dir``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.eval.items import AnswerKind, BenchCall, EvalItem, LoadReport, ReferenceStep, SkippedItem
from mmat.eval.media import FRAME_TIMES_S, VIDEO_SUFFIXES, MediaError, prepare_image, video_frames
from mmat.eval.toolmap import map_gta_tool

__all__ = ["load_gta"]


class _Malformed(ValueError):
    """One item cannot be used; the message is the reason shown to the user."""


class _Media:
    """Where prepared media go and how videos are sampled (None media_dir: files are used as they are)."""

    def __init__(self, media_dir: Path | None, frame_times_s: tuple[float, ...]):
        self.media_dir = media_dir
        self.frame_times_s = frame_times_s


def load_gta(
    path: Path | str, *, data_dir: Path | str | None = None, media_dir: Path | str | None = None,
    frame_times_s: tuple[float, ...] = FRAME_TIMES_S, raw: Any = None,
) -> LoadReport:
    """Read a GTA-format dataset file (GTA's or Agent-X's dataset.json); item files resolve against
    ``data_dir`` (default: the file's directory). With ``media_dir``, mislabelled images are given to the
    agent under their real type and videos as frames (both written under ``media_dir``)."""
    path = Path(path)
    raw = _read_json(path) if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a GTA benchmark file: expected a JSON object keyed '0'..'N', got {type(raw).__name__}.")
    base = Path(data_dir) if data_dir is not None else path.parent
    media = _Media(Path(media_dir) if media_dir is not None else None, tuple(frame_times_s))
    report = LoadReport(source=str(path))
    for key in sorted(raw, key=_key_order):
        try:
            item, unknown = _parse_item(str(key), raw[key], base, media)
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


def _parse_item(key: str, raw: Any, base: Path, media: _Media | None = None) -> tuple[EvalItem, list[str]]:
    if not isinstance(raw, dict):
        raise _Malformed(f"item is a {type(raw).__name__}, not an object")
    dialogs = raw.get("dialogs")
    if not isinstance(dialogs, list) or not dialogs:
        raise _Malformed("no dialogs")
    question, block_files = _question(dialogs)
    unknown: list[str] = []
    tools = _available_tools(raw.get("tools", []), unknown)
    gold = _gold_tool_calls(dialogs, unknown)
    rel_paths = _file_paths(raw.get("files", []))
    rel_paths += [p for p in block_files if p not in rel_paths]
    files, notes = _resolve_files(rel_paths, base, media or _Media(None, FRAME_TIMES_S))
    if "gt_answer" not in raw:
        raise _Malformed("no gt_answer field (use null for image-generation items)")
    gt, kind = _gt(raw["gt_answer"])
    calls = _bench_calls(dialogs)
    item = EvalItem(
        key=key, question=question, files=files, tools=tools, gold_tool_calls=gold, gt=gt, answer_kind=kind,
        bench_calls=calls, media_notes=notes,
        query_type={"whitelist": "objective", "subjective": "subjective"}.get(kind),
        generative=kind == "none",
        reference_steps=[ReferenceStep(step=i + 1, tool=c.name, input=c.arguments, output=c.output) for i, c in enumerate(calls)],
        reference_answer=_final_assistant_text(dialogs),
    )
    return item, unknown


def _question(dialogs: list[Any]) -> tuple[str, list[str]]:
    """The first user turn's text, and the files its image blocks name (Agent-X's list-typed turns)."""
    for turn in dialogs:
        if isinstance(turn, dict) and turn.get("role") == "user":
            content = turn.get("content")
            if isinstance(content, str) and content.strip():
                return content, []
            if isinstance(content, list):
                return _blocks(content)
            raise _Malformed("first user message has no text content")
    raise _Malformed("no user message in dialogs")


def _blocks(content: list[Any]) -> tuple[str, list[str]]:
    texts: list[str] = []
    files: list[str] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in ("image", "video") and isinstance(block.get(kind), str) and block[kind]:
            files.append(block[kind])
        else:
            raise _Malformed(f"user turn block {block!r} is neither a text nor an image block")
    text = "\n".join(t for t in texts if t.strip())
    if not text.strip():
        raise _Malformed("first user message has no text block")
    return text, files


def _bench_calls(dialogs: list[Any]) -> list[BenchCall]:
    """Every reference tool call with its arguments and the tool turn that answered it."""
    calls: list[BenchCall] = []
    pending: list[int] = []
    for turn in dialogs:
        if not isinstance(turn, dict):
            continue
        if turn.get("role") == "assistant":
            for call in turn.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    args = function.get("arguments")
                    calls.append(BenchCall(name=function["name"], arguments=args if isinstance(args, dict) else {}))
                    pending.append(len(calls) - 1)
        elif turn.get("role") == "tool" and pending:
            idx = pending.pop(0)
            content = turn.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)
            calls[idx] = calls[idx].model_copy(update={"output": text})
    return calls


def _final_assistant_text(dialogs: list[Any]) -> str | None:
    final = None
    for turn in dialogs:
        if isinstance(turn, dict) and turn.get("role") == "assistant" and not turn.get("tool_calls"):
            content = turn.get("content")
            if isinstance(content, str) and content.strip():
                final = content
    return final


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


def _file_paths(raw_files: Any) -> list[str]:
    if not isinstance(raw_files, list):
        raise _Malformed("files is not a list")
    paths: list[str] = []
    for entry in raw_files:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel:
            raise _Malformed(f"file entry without a path: {entry!r}")
        paths.append(rel)
    return paths


def resolve_file(rel: str, base: Path) -> Path:
    """A benchmark path under ``base``; Agent-X's ``image/X`` paths are looked up in ``files/X`` too."""
    resolved = (base / rel).resolve()
    if resolved.is_file():
        return resolved
    parts = Path(rel).parts
    if parts and parts[0] == "image":
        alt = (base / "files" / Path(*parts[1:])).resolve() if len(parts) > 1 else None
        if alt is not None and alt.is_file():
            return alt
    raise _Malformed(f"file not found: {resolved} (pass the directory holding the benchmark's files as data_dir)")


def _resolve_files(rel_paths: list[str], base: Path, media: _Media) -> tuple[list[Path], list[str]]:
    files: list[Path] = []
    notes: list[str] = []
    for rel in rel_paths:
        path = resolve_file(rel, base)
        if media.media_dir is None:
            files.append(path)
            continue
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                frames, note = video_frames(path, media.media_dir, media.frame_times_s)
                files.extend(frames)
                notes.append(note)
            elif _looks_like_image(path):
                prepared, note = prepare_image(path, media.media_dir)
                files.append(prepared)
                if note:
                    notes.append(note)
            else:
                files.append(path)
        except MediaError as e:
            raise _Malformed(str(e)) from None
    return files, notes


_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def _looks_like_image(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_SUFFIXES


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
