"""``inspect_file_as_text``: read a document as markdown, optionally answering a question about it.

Documents go through markitdown's ``convert_stream`` on the file's bytes, in a bounded child process
(``mmat.tools.bounded``: archives are size-checked first, then time and memory are limited; never
``convert`` on a URL, which would fetch it). Audio is transcribed only by a local Whisper model, never by markitdown (whose audio path
calls an online speech API). Images are refused with a pointer to the vision tools.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Annotated, Any

from mmat.tools.bounded import decode_audio, document_markdown
from mmat.tools.context import MAX_INPUT_BYTES, ToolContext, WorkspaceFile
from mmat.tools.errors import ToolArgumentError, ToolError, ToolUnavailableError
from mmat.tools.registry import ToolEnv, tool
from mmat.tools.weights import find_weights, weights_status

__all__ = ["inspect_file_as_text", "file_to_markdown", "markdown_text", "AUDIO_SUFFIXES", "IMAGE_SUFFIXES", "MAX_TEXT_CHARS"]

MAX_TEXT_CHARS = 20_000  # observation budget: longer text is cut with a note saying how much was shown
MAX_LM_CHARS = 8_000  # text handed to the model that answers a question (fits small models' context)
AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
ASR_ALIAS = "whisper"
ASR_REPOS = ("openai/whisper-tiny", "openai/whisper-base", "openai/whisper-small")
ASR_SAMPLE_RATE = 16_000

_asr: dict[Path, Any] = {}
_lock = threading.Lock()


@tool(returns="the file's content as markdown text, or the answer to the question when one is given")
def inspect_file_as_text(
    file_path: Annotated[str, "File in the workspace: pdf, docx, xlsx, pptx, html, csv, json, xml, zip, txt, md, py, ... (not images)."],
    question: Annotated[str | None, "Optional question to answer from the file; leave it out to get the whole text."] = None,
) -> str:
    """Read a document, spreadsheet, presentation, web page, archive or text file as markdown text, and optionally answer a question about it. It cannot read images: use visualizer or ocr for those."""


def _is_audio(kwargs: dict[str, Any]) -> bool:
    return Path(str(kwargs["file_path"])).suffix.lower() in AUDIO_SUFFIXES


def _not_audio(kwargs: dict[str, Any]) -> bool:
    return not _is_audio(kwargs)


def markitdown_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("markitdown") is None:
        return False, "markitdown is not installed: pip install 'markitdown[pdf,docx,xlsx,pptx]==0.1.8'"
    return True, "markitdown convert_stream in a bounded child (pdf, docx, xlsx, pptx, html, csv, json, xml, zip, text)"


def asr_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return False, "torch and transformers are needed for speech recognition"
    available, reason = weights_status(env.settings, ASR_ALIAS, ASR_REPOS, "Whisper speech-recognition")
    return available, reason if available else f"audio files cannot be transcribed: {reason}"


def file_to_markdown(path: Path, shown_name: str) -> str:
    """Markdown text of a local document (a file the caller names, e.g. a task's generated file).

    Opened without following a link (the file may have been written by sandboxed code) and converted
    in a bounded child like any workspace file."""
    from mmat.sandbox import safefs

    try:
        with safefs.root(path.parent) as fd:
            data = safefs.read_bytes(fd, path.name, MAX_INPUT_BYTES)
    except OSError as e:
        raise ToolArgumentError(f"inspect_file_as_text: cannot open '{shown_name}' ({e.strerror or type(e).__name__})") from None
    return markdown_text(WorkspaceFile(shown_name, data))


def markdown_text(f: WorkspaceFile) -> str:
    """Markdown text of a document's bytes; unreadable files become ToolArgumentErrors naming the file."""
    text = document_markdown(f)
    if _looks_binary(text):  # markitdown fell back to reading the bytes as text
        raise ToolArgumentError(
            f"inspect_file_as_text: could not read '{f.name}': it holds binary data that no converter "
            "understood (a damaged file, or not what its extension says)"
        )
    return text


_BINARY_MAGIC = ("PK\x03\x04", "%PDF", "\x89PNG", "GIF8", "\xff\xd8\xff")
BINARY_CHAR_SHARE = 0.05  # more control characters than this and the "text" is raw bytes


def _looks_binary(text: str) -> bool:
    if text.startswith(_BINARY_MAGIC):
        return True
    sample = text[:20_000]
    odd = sum(1 for c in sample if (c < " " and c not in "\n\r\t\f") or c == "\ufffd")
    return bool(sample) and odd / len(sample) > BINARY_CHAR_SHARE


def _truncate(text: str, limit: int) -> tuple[str, str]:
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"\n\n[truncated: showing the first {limit:,} of {len(text):,} characters]"


def _answer_or_text(ctx: ToolContext, name: str, kind: str, text: str, question: str | None) -> str:
    if not text.strip():
        return f"'{name}' contains no readable text ({kind})."
    if question and question.strip() and ctx.lm is not None:
        from mmat.signatures.tools import FileQuestion

        document, note = _truncate(text, MAX_LM_CHARS)
        answer = ctx.predict("inspect_file_as_text", FileQuestion, file_name=name, document=document + note,
                             question=question).answer
        cut = f" (only the first {MAX_LM_CHARS:,} of {len(text):,} characters were read)" if note else ""
        return f"Answer from '{name}'{cut}: {answer}"
    body, note = _truncate(text, MAX_TEXT_CHARS)
    unanswered = "(no model is available to answer the question here; the text follows)\n" if question else ""
    return f"{unanswered}Content of '{name}' ({kind}):\n{body}{note}"


@inspect_file_as_text.backend("markitdown", check=markitdown_status, accepts=_not_audio)
def _inspect_markitdown(ctx: ToolContext, file_path: str, question: str | None) -> str:
    f = ctx.read_file("inspect_file_as_text", file_path)
    if f.suffix in IMAGE_SUFFIXES:
        raise ToolArgumentError(
            f"inspect_file_as_text: '{f.name}' is an image; use visualizer to ask about it or ocr to read its text"
        )
    text = markdown_text(f)
    return _answer_or_text(ctx, f.name, f"{f.suffix.lstrip('.') or 'text'} as markdown", text, question)


def _read_audio(f: WorkspaceFile) -> Any:
    """Mono float32 samples at 16 kHz (decoded in a bounded child: .wav by the standard library, others by soundfile)."""
    import numpy as np

    if f.suffix != ".wav" and importlib.util.find_spec("soundfile") is None:
        raise ToolUnavailableError(
            f"inspect_file_as_text: only .wav audio can be decoded here ('{f.name}' is {f.suffix}); install soundfile for others"
        )
    data, rate = decode_audio(f)
    if rate != ASR_SAMPLE_RATE and len(data):
        positions = np.arange(0, len(data), rate / ASR_SAMPLE_RATE)
        data = np.interp(positions, np.arange(len(data)), data).astype(np.float32)
    return data


@inspect_file_as_text.backend("whisper-asr", check=asr_status, accepts=_is_audio)
def _inspect_audio(ctx: ToolContext, file_path: str, question: str | None) -> str:
    f = ctx.read_file("inspect_file_as_text", file_path, what="audio file")
    name = f.name
    found = find_weights(ctx.settings, ASR_ALIAS, ASR_REPOS)
    if found is None:  # removed between the availability check and now
        raise ToolUnavailableError(f"inspect_file_as_text: {asr_status(ctx.env)[1]}")
    samples = _read_audio(f)
    with _lock:
        if found.path not in _asr:
            from transformers import pipeline

            _asr[found.path] = pipeline("automatic-speech-recognition", model=str(found.path), device="cpu")
    try:
        text = _asr[found.path]({"raw": samples, "sampling_rate": ASR_SAMPLE_RATE}, chunk_length_s=30)["text"]
    except ValueError as e:
        raise ToolError(f"inspect_file_as_text: transcription of '{name}' failed: {e}") from None
    return _answer_or_text(ctx, name, "speech transcript", text.strip(), question)
