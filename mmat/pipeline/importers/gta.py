"""GTA-format items (GTA's ``dataset.json``) -> reference trajectories for mmat's code agent.

GTA's dialogs are JSON tool calls: assistant turns with ``tool_calls`` (``function.name``, ``function.arguments``),
``tool`` turns with the result (``content.content`` or text), and a final assistant answer. Each tool call
becomes one code step calling the mmat tool that GTA's tool maps to (``mmat.eval.toolmap``), with the
arguments mmat's tool takes; Calculator/Solver/Plot become the Python they stand for. The answer step is
``final_answer(...)``. Items are benchmark items: they land in split ``eval`` with no verdict, so the
default training selection never takes them (select them with ``--where "t.origin = 'import'"``).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmat.eval.toolmap import GTA_TOOL_MAP
from mmat.pipeline.importers.items import BadRow, ImportedFile, ImportedStep, ImportedTrajectory, ToolNames, modality_of

__all__ = ["read_gta", "GTA_TOOL_NAMES"]

GTA_TOOL_NAMES = {k: v for k, v in GTA_TOOL_MAP.items() if v}


def _image_arg(args: dict[str, Any]) -> str:
    return Path(str(args.get("image", ""))).name


def _call(name: str, args: dict[str, Any]) -> tuple[str, str | None]:
    """(code, mmat tool) for one GTA tool call."""
    img = _image_arg(args)
    text = args.get("text")
    if name in ("OCR", "MathOCR"):
        return f"print(ocr(image_path={img!r}))", "ocr"
    if name == "ImageDescription":
        return f"print(visualizer(question='Describe the image.', image_path={img!r}))", "visualizer"
    if name == "RegionAttributeDescription":
        q = f"What is the {args.get('attribute', 'content')} in the region {args.get('bbox')}?"
        return f"print(visualizer(question={q!r}, image_path={img!r}))", "visualizer"
    if name == "CountGivenObject":
        return f"print(visualizer(question={f'How many {text} are there?'!r}, image_path={img!r}))", "visualizer"
    if name == "TextToBbox":
        return f"print(objectlocation(object={text!r}, image_path={img!r}))", "objectlocation"
    if name == "GoogleSearch":
        return f"print(ask_search_agent(query={args.get('query')!r}))", "ask_search_agent"
    if name in ("DrawBox", "AddText", "ImageStylization"):
        prompt = {"DrawBox": f"draw a box at {args.get('bbox')} labelled {args.get('annotation', '')}".strip(),
                  "AddText": f"add the text {text!r} at {args.get('position')}",
                  "ImageStylization": str(args.get("instruction", ""))}[name]
        return f"print(image_edit(prompt={prompt!r}, image_path={img!r}))", "image_edit"
    if name == "TextToImage":
        return f"print(image_generator(prompt={args.get('keywords')!r}))", "image_generator"
    if name == "Calculator":
        return f"print({args.get('expression')})", None
    if name in ("Solver", "Plot"):
        return str(args.get("command", "")), None
    raise BadRow(f"GTA tool {name!r} has no mmat counterpart")


def _result(turn: dict[str, Any]) -> str:
    content = turn.get("content")
    if isinstance(content, dict):
        content = content.get("content", content.get("text", json.dumps(content)))
    return content if isinstance(content, str) else json.dumps(content, default=str)


def _item(key: str, raw: Any, root: Path, tools: ToolNames) -> ImportedTrajectory:
    if not isinstance(raw, dict) or not isinstance(raw.get("dialogs"), list):
        raise BadRow("no 'dialogs' list (is this a GTA dataset.json?)")
    dialogs = raw["dialogs"]
    query = next((t.get("content") for t in dialogs if isinstance(t, dict) and t.get("role") == "user"), None)
    if not isinstance(query, str) or not query.strip():
        raise BadRow("no user question in the dialogs")
    files = []
    for f in raw.get("files") or []:
        path = root / f.get("path", "") if isinstance(f, dict) else None
        if path is None or not path.is_file():
            raise BadRow(f"file {f.get('path') if isinstance(f, dict) else f!r} not found under {root}")
        files.append(ImportedFile(name=path.name, path=path, modality=modality_of(path.name),
                                  mime=mimetypes.guess_type(path.name)[0] or ""))
    offered = [tools.map(GTA_TOOL_NAMES[t["name"]]) if t.get("name") in GTA_TOOL_NAMES else tools.map(str(t.get("name")))
               for t in raw.get("tools") or [] if isinstance(t, dict) and GTA_TOOL_MAP.get(t.get("name"), "") is not None]
    steps: list[ImportedStep] = []
    answer = None
    for turn in dialogs:
        if not isinstance(turn, dict):
            continue
        if turn.get("role") == "assistant" and turn.get("tool_calls"):
            for call in turn["tool_calls"]:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not function.get("name"):
                    raise BadRow("an assistant tool call has no function name")
                args = function.get("arguments") or {}
                args = json.loads(args) if isinstance(args, str) else args
                code, mapped = _call(function["name"], args)
                calls = [{"name": mapped, "arguments": json.dumps(args, default=str), "result": None, "duration_ms": None,
                          "error": None}] if mapped else []
                steps.append(ImportedStep(thought=str(turn.get("thought") or f"Use {function['name']}."), code=code,
                                          tool_calls=calls))
        elif turn.get("role") == "tool" and steps:
            steps[-1].observation = _result(turn)
        elif turn.get("role") == "assistant" and isinstance(turn.get("content"), str):
            answer = turn["content"].strip()
    if not answer:
        raise BadRow("no answer: the dialog does not end with the assistant's answer")
    steps.append(ImportedStep(thought="I have the answer.", code=f"final_answer({answer!r})", observation=answer))
    return ImportedTrajectory(query=query.strip(), files=files, steps=steps, tools=list(dict.fromkeys(offered)),
                              answer=answer, multimodal=any(f.modality == "image" for f in files), split="eval",
                              domain="gta", task={"expected_answer": json.dumps(raw.get("gt_answer"), default=str)})


def read_gta(data: Any, root: Path, tools: ToolNames, controller: str) -> Iterator[tuple[int | str, Any]]:
    if not isinstance(data, dict):
        raise BadRow("a GTA dataset.json is an object keyed '0'..'N'")
    for key in sorted(data, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k))):
        try:
            traj = _item(str(key), data[key], root, tools)
            traj.controller = controller
            yield key, traj
        except BadRow as e:
            yield key, e
