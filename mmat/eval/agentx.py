"""Load Agent-X (mbzuai-oryx/Agent-X) in either of the two files it ships.

* ``data.json`` — an object keyed "0".."827"; each value is a one-element list whose entry has ``file_path``
  (comma-separated names for several inputs, found in the data set's ``files/`` folder), ``query``,
  ``query_type`` (objective | subjective), ``tool_metadata`` (only the tools the reference uses),
  ``reasoning_steps`` ([{step, task, tool, input, output, thought}], sometimes nested one list deeper)
  and ``final_answer`` ({value, justification}).
* ``dataset.json`` — GTA's format (loaded by :func:`mmat.eval.gta.load_gta`, which accepts Agent-X's
  list-typed user turns, ``image/`` paths and videos).

Either way the agent is offered mmat's full tool set (``EvalItem.tools`` empty), never the reference's
``tool_metadata`` — that would leak the reference chain; the metadata is kept for the judge only. Tool names
go data.json name -> GTA name (:data:`AGENTX_TO_GTA`) -> mmat tool (:data:`mmat.eval.toolmap.GTA_TOOL_MAP`).
Image-answer ("generative") ids come from a file (``--generative-ids``: a JSON list or one id a line) or,
for dataset.json, from the items whose ``gt_answer`` is null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.eval.gta import _Malformed, _key_order, _Media, _resolve_files, load_gta
from mmat.eval.items import BenchCall, EvalItem, LoadReport, ReferenceStep, SkippedItem
from mmat.eval.media import FRAME_TIMES_S
from mmat.eval.toolmap import map_gta_tool

__all__ = ["AGENTX_TO_GTA", "load_agentx", "read_generative_ids", "agentx_format"]

# data.json's tool names -> GTA's (BENCHMARKS.md); dataset.json already uses GTA's names.
AGENTX_TO_GTA: dict[str, str] = {
    "OCR": "OCR",
    "MathOCR": "MathOCR",
    "SceneDescriber": "ImageDescription",
    "RegionDescriber": "RegionAttributeDescription",
    "ObjectCounter": "CountGivenObject",
    "LocateObjectByText": "TextToBbox",
    "WebSearch": "GoogleSearch",
    "DrawBoundingBox": "DrawBox",
    "OverlayText": "AddText",
    "ImageStylization": "ImageStylization",
    "ImageGenerator": "TextToImage",
    "Calculator": "Calculator",
    "Solver": "Solver",
    "CodePlotter": "Plot",
}


def agentx_format(raw: Any) -> str:
    """'data' (reference steps) or 'dataset' (GTA format), from the first item's shape."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("not an Agent-X file: expected a JSON object keyed '0'..'N' (data.json or dataset.json).")
    first = raw[sorted(raw, key=_key_order)[0]]
    if isinstance(first, dict) and "dialogs" in first:
        return "dataset"
    if isinstance(first, list) or (isinstance(first, dict) and "query" in first):
        return "data"
    raise ConfigError("not an Agent-X file: items have neither `dialogs` (dataset.json) nor `query` (data.json).")


def read_generative_ids(path: Path | str) -> set[str]:
    """Image-answer item ids from a JSON list (or object keys) or a text file with one id a line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the generative ids file {path}: {e}") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"generative ids file {path} is not valid JSON ({e}): write a JSON list or one id a line.") from None
        return {str(v).strip() for v in (list(value) if isinstance(value, dict) else value)}
    ids = {line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}
    if not ids:
        raise ConfigError(f"generative ids file {path} holds no ids: write a JSON list or one id a line.")
    return ids


def load_agentx(
    path: Path | str, *, data_dir: Path | str | None = None, media_dir: Path | str | None = None,
    generative_ids: set[str] | None = None, frame_times_s: tuple[float, ...] = FRAME_TIMES_S,
) -> LoadReport:
    """Read Agent-X's data.json or dataset.json (detected from the content) into EvalItems."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark file {path} does not exist: point at Agent-X's data.json or dataset.json.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"benchmark file {path} is not valid JSON ({e}): re-download or fix it.") from None
    base = Path(data_dir) if data_dir is not None else path.parent
    if agentx_format(raw) == "dataset":
        report = load_gta(path, data_dir=base, media_dir=media_dir, frame_times_s=frame_times_s, raw=raw)
        items = [_as_agentx(item, generative_ids) for item in report.items]
        return report.model_copy(update={"items": items})
    media = _Media(Path(media_dir) if media_dir is not None else None, tuple(frame_times_s))
    report = LoadReport(source=str(path))
    for key in sorted(raw, key=_key_order):
        try:
            item, unknown = _data_item(str(key), raw[key], base, media, generative_ids)
        except _Malformed as e:
            report.skipped.append(SkippedItem(key=str(key), reason=str(e)))
            continue
        report.items.append(item)
        for name in unknown:
            report.unknown_tools.setdefault(name, []).append(item.key)
    return report


def _as_agentx(item: EvalItem, generative_ids: set[str] | None) -> EvalItem:
    """A dataset.json item as Agent-X uses it: full tool set offered; generative from the ids or a null answer."""
    generative = item.key in generative_ids if generative_ids is not None else item.answer_kind == "none"
    return item.model_copy(update={"tools": [], "generative": generative})


def _data_item(
    key: str, raw: Any, base: Path, media: _Media, generative_ids: set[str] | None
) -> tuple[EvalItem, list[str]]:
    entry = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
    if not isinstance(entry, dict):
        raise _Malformed("item is not a one-element list holding an object")
    query = entry.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _Malformed("no query text")
    query_type = entry.get("query_type")
    if query_type not in ("objective", "subjective"):
        raise _Malformed(f"query_type {query_type!r} is neither 'objective' nor 'subjective'")
    file_path = entry.get("file_path")
    if not isinstance(file_path, str) or not file_path.strip():
        raise _Malformed("no file_path")
    names = [n.strip() for n in file_path.split(",") if n.strip()]
    rel = [n if (base / n).is_file() else f"files/{n}" for n in names]
    files, notes = _resolve_files(rel, base, media)
    steps, unknown = _steps(entry.get("reasoning_steps"))
    answer = entry.get("final_answer")
    if not isinstance(answer, dict) or "value" not in answer:
        raise _Malformed("final_answer is not an object with a value")
    value = answer.get("value")
    value_text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    justification = answer.get("justification")
    reference = value_text + (f"\n(justification: {justification})" if isinstance(justification, str) and justification else "")
    gold: list[str] = []
    for step in steps:
        known, mmat_name = map_gta_tool(step.tool)
        if known and mmat_name is not None:
            gold.append(mmat_name)
    item = EvalItem(
        key=key, question=query, files=files, tools=[], gold_tool_calls=gold, gt=value_text, answer_kind="judged",
        bench_calls=[BenchCall(name=s.tool, arguments=s.input if isinstance(s.input, dict) else {"input": s.input},
                               output=None if s.output is None else str(s.output)) for s in steps if s.tool],
        query_type=query_type, generative=key in generative_ids if generative_ids is not None else False,
        reference_steps=steps, reference_answer=reference, tool_metadata=_metadata(entry.get("tool_metadata")),
        media_notes=notes,
    )
    return item, unknown


def _steps(raw: Any) -> tuple[list[ReferenceStep], list[str]]:
    if not isinstance(raw, list):
        raise _Malformed("reasoning_steps is not a list")
    flat = [s for group in raw for s in (group if isinstance(group, list) else [group])]  # nested one level deeper
    steps: list[ReferenceStep] = []
    unknown: list[str] = []
    for i, step in enumerate(flat, start=1):
        if not isinstance(step, dict):
            raise _Malformed(f"reasoning step {i} is not an object")
        tool = step.get("tool") or ""
        if not isinstance(tool, str):
            raise _Malformed(f"reasoning step {i} has a tool {tool!r} that is not a name")
        gta = AGENTX_TO_GTA.get(tool, tool)
        if tool and tool not in AGENTX_TO_GTA and not map_gta_tool(tool)[0]:
            unknown.append(tool)
        number = step.get("step")
        steps.append(ReferenceStep(
            step=number if isinstance(number, int) and not isinstance(number, bool) else i,
            task=str(step.get("task") or ""), tool=gta, input=step.get("input"), output=step.get("output"),
            thought=str(step.get("thought") or ""),
        ))
    return steps, unknown


def _metadata(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, dict):
        return [{"name": k, **v} if isinstance(v, dict) else {"name": k, "description": str(v)} for k, v in raw.items()]
    if isinstance(raw, list):
        return [m for m in raw if isinstance(m, dict)]
    return []
