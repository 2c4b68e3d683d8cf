"""What every import reader yields: trajectories and step pairs in mmat's terms, or a bad row with its reason.

Readers only parse; ``mmat.pipeline.importers.run_import`` hashes, copies images into blobs and writes.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ImportedFile", "ImportedStep", "ImportedTrajectory", "ImportedPair", "BadRow", "ToolNames",
           "parse_react_step", "code_tool_calls", "final_answer_of", "strip_placeholders", "modality_of", "MAT_TOOL_MAP"]


class BadRow(Exception):
    """A row that cannot be imported; the message is the reason the report shows with the row's index."""


@dataclass
class ImportedFile:
    name: str  # the name the agent sees in its workspace
    path: Path | None = None  # a file to copy into blobs ...
    data: bytes | None = None  # ... or its bytes
    modality: str = "image"
    mime: str = ""
    caption: str | None = None
    source: str = "user"


@dataclass
class ImportedStep:
    thought: str
    code: str
    observation: str = ""
    error: str | None = None
    images: list[ImportedFile] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float | None = None


@dataclass
class ImportedTrajectory:
    query: str
    files: list[ImportedFile]
    steps: list[ImportedStep]
    tools: list[str]  # tools offered (mapped names; unknown ones kept as they were)
    answer: str | None
    multimodal: bool
    status: str = "answered"
    verdict: str | None = None  # only mmat's own records carry mmat verdicts
    controller: str | None = None
    domain: str | None = None
    split: str = "train"
    task: dict[str, Any] = field(default_factory=dict)  # more task columns (mmat records)
    ids: dict[str, str] = field(default_factory=dict)  # task_id / traj_id to keep (mmat records)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 0
    n_errors: int | None = None


@dataclass
class ImportedPair:
    trajectory: ImportedTrajectory  # its first ``step_idx`` steps are the pair's context
    step_idx: int
    chosen: dict[str, Any]  # {thought, code, observation, error}
    rejected: dict[str, Any]
    judge: str | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    rule: str = "import"
    reasons: list[str] = field(default_factory=list)
    pair_id: str | None = None


# MAT's and MATRIX's code agents call tools by these names (MAT's tongagent tool set) -> mmat's tools.
MAT_TOOL_MAP: dict[str, str] = {
    "ask_search_agent": "ask_search_agent", "web_search": "ask_search_agent", "search": "ask_search_agent",
    "visualizer": "visualizer", "inspect_file_as_text": "inspect_file_as_text", "objectlocation": "objectlocation",
    "image_generator": "image_generator", "image_edit": "image_edit", "facedetection": "facedetection",
    "face_det": "facedetection", "segmentation": "segmentation", "ocr": "ocr", "final_answer": "final_answer",
}


class ToolNames:
    """Maps a source's tool names to mmat's; counts renames, and unknown names (kept as they are) per trajectory."""

    def __init__(self, mapping: dict[str, str]):
        from mmat.tools import REGISTRY

        self.mapping = mapping
        self.known = set(REGISTRY)
        self.unknown: Counter[str] = Counter()
        self.renamed: Counter[str] = Counter()

    def map(self, name: str) -> str:
        if name in self.mapping:
            new = self.mapping[name]
            if new != name:
                self.renamed[f"{name}->{new}"] += 1
            return new
        return name

    def count_unknown(self, names: set[str]) -> None:
        """Count each unknown tool once per trajectory that names or calls it."""
        for name in names - self.known:
            self.unknown[name] += 1

    def rewrite_code(self, code: str) -> str:
        """Calls of renamed tools in code, renamed (``web_search(`` -> ``ask_search_agent(``)."""
        for old, new in self.mapping.items():
            if old != new:
                code = re.sub(rf"(?<![\w.]){re.escape(old)}(?=\s*\()", new, code)
        return code


_THOUGHT = re.compile(r"Thought:\s*(.*?)\s*(?:\n\s*)?Code:\s*", re.S)
_CODE_BLOCK = re.compile(r"```(?:py|python)?[ \t]*\n(.*?)\n?```", re.S)
_END = re.compile(r"<end_action>|<end_code>|<end_of_code>")


def parse_react_step(text: str) -> tuple[str, str]:
    """(thought, code) from a ReAct code-agent turn ``Thought: ... Code: ```py ... ``` <end_action>``."""
    text = _END.sub("", text or "").strip()
    code_match = _CODE_BLOCK.search(text)
    thought_match = _THOUGHT.search(text)
    if code_match is None:
        if thought_match is None:
            raise BadRow("an assistant turn has no 'Code:' block")
        code = text[thought_match.end():].strip()
        if not code:
            raise BadRow("an assistant turn has an empty 'Code:' block")
    else:
        code = code_match.group(1).strip()
    if thought_match is not None:
        thought = thought_match.group(1).strip()
    else:
        thought = text[: code_match.start()].strip() if code_match else ""
        thought = re.sub(r"^Thought:\s*", "", thought)
    return thought, code


def _literal(node: ast.AST, source: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, RecursionError):
        return ast.get_source_segment(source, node)


def code_tool_calls(code: str, tools: ToolNames, offered: set[str]) -> list[dict[str, Any]]:
    """Tool calls the code makes (by name, with literal arguments where it wrote them); results are not known."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name in offered or name in tools.known:
                args = {kw.arg: _literal(kw.value, code) for kw in node.keywords if kw.arg}
                for i, arg in enumerate(node.args):
                    args[f"arg{i}"] = _literal(arg, code)
                calls.append({"name": name, "arguments": json.dumps(args, ensure_ascii=False, default=str),
                              "result": None, "duration_ms": None, "error": None})
    return calls


def final_answer_of(code: str) -> str | None:
    """The argument of the last ``final_answer(...)`` call in ``code`` (its literal value, else its source)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        match = re.search(r"final_answer\((.*)\)", code, re.S)
        return match.group(1).strip().strip("'\"") if match else None
    answer = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "final_answer":
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "answer"), None)
            if arg is not None:
                value = _literal(arg, code)
                answer = value if isinstance(value, str) else json.dumps(value, default=str)
    return answer


_PLACEHOLDER = re.compile(r"<image(?:_\d+)?>")


def strip_placeholders(text: str) -> tuple[str, int]:
    """Text without image placeholders (``<image>``, ``<image_00>``) and how many there were."""
    return _PLACEHOLDER.sub("", text).strip(), len(_PLACEHOLDER.findall(text))


_MODALITIES = {".png": "image", ".jpg": "image", ".jpeg": "image", ".gif": "image", ".bmp": "image", ".webp": "image",
               ".csv": "table", ".xlsx": "table", ".xls": "table", ".pdf": "document", ".docx": "document",
               ".pptx": "document", ".txt": "text", ".md": "text", ".json": "text", ".py": "code", ".zip": "archive",
               ".mp3": "audio", ".wav": "audio"}


def modality_of(name: str) -> str:
    return _MODALITIES.get(Path(name).suffix.lower(), "text")
