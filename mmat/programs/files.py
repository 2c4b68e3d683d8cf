"""Task files as the agent and the verifiers see them: names, MIME types, listings, text views.

``GeneratedFile`` is the record FileGenerator returns and the runner stores (``files`` table); the
agent, the verifiers and :func:`trajectory_conversation` all render files through the functions here,
so a file reads the same everywhere.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mmat.signatures.queries import FileFormat, FileNeed, Modality

__all__ = [
    "GeneratedFile",
    "file_name_for",
    "mime_for",
    "list_files",
    "describe_files",
    "image_files",
    "DEFAULT_FORMAT",
    "FORMATS_BY_MODALITY",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_MODALITY_BY_SUFFIX = {
    **{s: "image" for s in IMAGE_SUFFIXES},
    **{s: "document" for s in (".pdf", ".docx", ".doc", ".pptx", ".ppt", ".html", ".htm", ".epub")},
    **{s: "table" for s in (".xlsx", ".xls", ".csv", ".tsv", ".parquet")},
    **{s: "text" for s in (".txt", ".md", ".log", ".json", ".jsonl", ".xml", ".yaml", ".yml")},
    **{s: "code" for s in (".py", ".js", ".ts", ".java", ".c", ".cpp", ".go", ".rs", ".sh", ".sql", ".r")},
    **{s: "archive" for s in (".zip", ".tar", ".gz", ".tgz")},
    **{s: "audio" for s in (".mp3", ".wav", ".flac", ".ogg", ".m4a")},
}
FORMATS_BY_MODALITY: dict[str, tuple[str, ...]] = {
    "image": ("png", "jpg"),
    "document": ("pdf", "docx", "pptx", "html", "md"),
    "table": ("xlsx", "csv", "json"),
    "text": ("txt", "md", "log", "json", "html"),
    "code": ("py",),
    "archive": ("zip",),
}
DEFAULT_FORMAT: dict[str, FileFormat] = {
    "image": "png", "document": "pdf", "table": "csv", "text": "txt", "code": "py", "archive": "zip",
}
_EXTRA_MIME = {".md": "text/markdown", ".log": "text/plain", ".py": "text/x-python", ".csv": "text/csv"}
DOCUMENT_PREVIEW_CHARS = 4000


class GeneratedFile(BaseModel):
    """One file of a task: where it is, what it is, where it came from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    modality: Modality | Literal["audio"]
    mime: str
    source: Literal["pool", "generated", "user"]
    caption: str = ""
    need_index: int | None = None
    image_id: str | None = None
    match_score: float | None = None

    @property
    def is_image(self) -> bool:
        return self.modality == "image" or self.path.suffix.lower() in IMAGE_SUFFIXES

    @classmethod
    def from_path(cls, path: Path | str, *, name: str | None = None, source: Literal["pool", "generated", "user"] = "user",
                  caption: str = "") -> GeneratedFile:
        """A file that already exists (benchmark items, user uploads, store rows): kind and MIME from its suffix."""
        path = Path(path)
        name = name or path.name
        modality = _MODALITY_BY_SUFFIX.get(Path(name).suffix.lower(), "document")
        return cls(name=name, path=path, modality=modality, mime=mime_for(name), source=source, caption=caption)


def mime_for(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _EXTRA_MIME.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:40].strip("_") or "file"


def file_name_for(need: FileNeed, taken: set[str]) -> str:
    """A safe, unique file name for ``need``: slug of the hint + an extension that fits the modality."""
    fmt = need.format if need.format in FORMATS_BY_MODALITY[need.modality] else DEFAULT_FORMAT[need.modality]
    stem = _slug(Path(need.name_hint).stem if "." in need.name_hint else need.name_hint)
    name, n = f"{stem}.{fmt}", 2
    while name in taken:
        name, n = f"{stem}_{n}.{fmt}", n + 1
    taken.add(name)
    return name


def list_files(files: Sequence[GeneratedFile]) -> str:
    """The agent's view of its files: names and kinds only (contents are for the tools to find)."""
    if not files:
        return "(no files)"
    return "\n".join(f"- {f.name} ({f.modality})" for f in files)


def image_files(files: Sequence[GeneratedFile]) -> list[GeneratedFile]:
    return [f for f in files if f.is_image]


def _document_text(f: GeneratedFile, limit: int) -> str:
    from mmat.tools.documents import file_to_markdown
    from mmat.tools.errors import ToolError

    try:
        text = file_to_markdown(f.path, f.name)
    except ToolError as e:  # a damaged file is the teacher's failure: the verifier must see it
        return f"[could not be read: {e}]"
    text = text.strip() or "[the file is empty]"
    if len(text) > limit:
        text = text[:limit] + f"\n[cut off: showing {limit:,} of {len(text):,} characters]"
    return text


def describe_files(files: Sequence[GeneratedFile], *, images_shown: bool, limit: int = DOCUMENT_PREVIEW_CHARS) -> str:
    """The verifiers' view: every file with its content (documents as markdown, cut at ``limit``);
    images by caption when they are not shown to the model, by reference when they are."""
    if not files:
        return "(no files)"
    blocks = []
    for i, f in enumerate(files, 1):
        head = f"{i}. {f.name} ({f.modality}, {f.mime})"
        if f.is_image:
            body = "Shown in images." if images_shown else f"Image description: {f.caption or '(none)'}"
        else:
            body = _document_text(f, limit)
        blocks.append(f"{head}\n{body}")
    return "\n\n".join(blocks)
