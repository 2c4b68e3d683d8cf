"""FileGenerator: make the files a QuerySpec needs.

Images are retrieved from the captioned image pool (best caption match, never the same image twice in
a task). Every other file is written by teacher code that runs in the sandbox; when the script fails,
or runs but leaves no usable file, the traceback or the finding goes back to the teacher (FixFileCode)
for up to ``max_retries`` more attempts. Every attempt is logged: the runner keeps them as data.

With ``settings`` (Synthesis passes its own), those scripts' sandbox comes from the process-wide warm
pool (``sandbox_pool``), as CodeAgent's does: the worker serves this one workspace and dies with it.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict

from mmat.config import Settings
from mmat.errors import ModelOutputError
from mmat.pool import ImagePool
from mmat.programs._calls import call_predictor, mark, strip_code_fences, stage_signature
from mmat.programs.files import GeneratedFile, file_name_for, mime_for
from mmat.signatures.files import FixFileCode, WriteFileCode
from mmat.signatures.queries import FileNeed, QuerySpec

__all__ = ["FileGenerator", "FileGenResult", "FileAttempt", "FileFailure", "check_file"]

MAX_ERROR_CHARS = 3000  # traceback tail shown to the teacher


class FileAttempt(BaseModel):
    """One script the teacher wrote for one file, and how it went."""

    model_config = ConfigDict(extra="forbid")

    need_index: int
    file_name: str
    attempt: int
    code: str
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class FileFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    need_index: int
    file_name: str
    reason: str


class FileGenResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[GeneratedFile] = []
    attempts: list[FileAttempt] = []
    failures: list[FileFailure] = []

    @property
    def ok(self) -> bool:
        return not self.failures


MAX_GENERATED_BYTES = 64 * 1024 * 1024  # the sandbox's default file-size limit


def check_file(path: Path, fmt: str) -> str | None:
    """What is wrong with a generated file, or None. Cheap structural checks, no parsing of content."""
    from mmat.sandbox import safefs

    # The file was written by sandboxed code that may still be running: one no-follow, non-blocking
    # open through the directory's fd, then only the bytes are looked at.
    try:
        with safefs.root(path.parent) as fd:
            data = safefs.read_bytes(fd, path.name, MAX_GENERATED_BYTES)
    except FileNotFoundError:
        return "missing"
    except safefs.NotRegularFile as e:
        return "it is a directory, not a file" if e.kind == "directory" else f"it is a {e.kind}; write a regular file"
    except safefs.FileTooLarge as e:
        return f"the file is {e.size:,} bytes, more than the {e.limit:,} allowed"
    except safefs.UnsafePath:
        return "it is a symbolic link; write a regular file"
    if not data:
        return "the file is empty"
    if fmt == "pdf" and not data.startswith(b"%PDF"):
        return "the file is not a PDF (it does not start with %PDF)"
    if fmt in ("docx", "pptx", "xlsx", "zip") and not zipfile.is_zipfile(io.BytesIO(data)):
        return f"the file is not a valid {fmt} (not a ZIP container)"
    if fmt in ("csv", "txt", "md", "log", "py", "html", "json"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "the file is not UTF-8 text"
        if fmt == "json":
            try:
                json.loads(text)
            except json.JSONDecodeError as e:
                return f"the file is not valid JSON ({e})"
    return None


class FileGenerator(dspy.Module):
    """QuerySpec -> files in ``workspace``: pool images, and sandbox-written documents with retries."""

    _mmat_name = "file_generator"

    def __init__(self, pool: ImagePool, *, max_retries: int = 3, limits: Any = None, min_image_score: float = 0.0,
                 signature: type[WriteFileCode] | None = None, settings: Settings | None = None):
        """``settings``: take the scripts' sandbox from the process-wide warm pool they configure (and
        the limits from them when ``limits`` is None); without, a sandbox is started cold per task."""
        super().__init__()
        self.pool = pool
        self.settings = settings
        self.max_retries = max_retries
        self.limits = limits
        self.min_image_score = min_image_score
        self.write = mark(dspy.Predict(stage_signature(signature, WriteFileCode)), "file_generator.write")
        self.fix = mark(dspy.Predict(FixFileCode), "file_generator.fix")

    def forward(self, spec: QuerySpec, workspace: Path, *, config: dict[str, Any] | None = None) -> FileGenResult:
        workspace = Path(workspace)
        workspace.mkdir(parents=True, exist_ok=True)
        result = FileGenResult()
        taken: set[str] = set()  # names depend on the spec alone, so a rerun writes the same files
        named = [(i, need, file_name_for(need, taken)) for i, need in enumerate(spec.file_needs)]
        documents = [(i, need, name) for i, need, name in named if need.modality != "image"]
        if documents:  # before the images go in, so no script can touch them
            with self.open_sandbox(workspace) as sandbox:
                for i, need, name in documents:
                    self._write_file(i, need, name, spec.query, workspace, sandbox, result, config or {})
        used_images: set[str] = set()
        for i, need, name in named:
            if need.modality == "image":
                self._pick_image(i, need, name, workspace, used_images, result)
        order = {name: k for k, (_, _, name) in enumerate(named)}
        result.files.sort(key=lambda f: order[f.name])
        return result

    def open_sandbox(self, workspace: Path) -> Any:
        """The scripts' sandbox on ``workspace`` (no tools): a warm worker from the process's pool
        when there are settings with ``sandbox_pool`` > 0 (same limits as CodeAgent's by default, so
        the same pool), else one started now."""
        from mmat.sandbox import Sandbox
        from mmat.sandbox.limits import Limits
        from mmat.sandbox.pool import shared_pool

        if self.settings is None:
            return Sandbox(workspace, tools=None, limits=self.limits or Limits(), inputs=[])
        limits = self.limits or Limits.from_settings(self.settings)
        pool = shared_pool(self.settings, limits)
        if pool is not None:
            return pool.acquire(workspace, tools=None, limits=limits)
        return Sandbox(workspace, tools=None, limits=limits, inputs=[])

    # --- images: retrieval ---------------------------------------------------------------------
    def _pick_image(self, i: int, need: FileNeed, name: str, workspace: Path, used: set[str], result: FileGenResult) -> None:
        hits = self.pool.search_scored(need.content, k=1, exclude=used)
        if not hits:
            result.failures.append(FileFailure(need_index=i, file_name=name, reason="the image pool has no unused image"))
            return
        image, score = hits[0]
        if score < self.min_image_score:
            result.failures.append(FileFailure(
                need_index=i, file_name=name,
                reason=f"no pool image matches {need.content!r} (best: {image.name}, similarity {score:.2f})",
            ))
            return
        used.add(image.image_id)
        path = image.save(workspace / name)
        result.files.append(GeneratedFile(
            name=name, path=path, modality="image", mime="image/png", source="pool", caption=image.caption,
            need_index=i, image_id=image.image_id, match_score=score,
        ))

    # --- other files: teacher code in the sandbox, with retries ----------------------------------
    def _write_file(self, i, need, name, query, workspace, sandbox, result, config) -> None:
        fmt = name.rsplit(".", 1)[-1]
        code, error = "", None
        for attempt in range(self.max_retries + 1):
            started = time.perf_counter()
            try:
                if attempt == 0 or not code:
                    pred = call_predictor(self.write, "file generation", task=query, file_name=name,
                                          modality=need.modality, content=need.content, config=config)
                else:
                    pred = call_predictor(self.fix, "file repair", task=query, file_name=name, modality=need.modality,
                                          content=need.content, previous_code=code, error=error, config=config)
            except ModelOutputError as e:
                code, error = "", str(e)
                result.attempts.append(FileAttempt(need_index=i, file_name=name, attempt=attempt, code="", error=error,
                                                   duration_ms=(time.perf_counter() - started) * 1000))
                continue
            code = pred.code or ""
            error = self._run_script(strip_code_fences(code), name, fmt, workspace, sandbox)
            result.attempts.append(FileAttempt(need_index=i, file_name=name, attempt=attempt, code=code, error=error,
                                               duration_ms=(time.perf_counter() - started) * 1000))
            if error is None:
                result.files.append(GeneratedFile(
                    name=name, path=workspace / name, modality=need.modality, mime=mime_for(name), source="generated",
                    caption=need.content, need_index=i,
                ))
                return
        result.failures.append(FileFailure(
            need_index=i, file_name=name, reason=f"no working script after {self.max_retries + 1} attempts: {error}"
        ))

    @staticmethod
    def _run_script(code: str, name: str, fmt: str, workspace: Path, sandbox: Any) -> str | None:
        """Run one script; the error text for the teacher, or None when ``name`` now exists and looks right."""
        if not code.strip():
            return "The answer contained no code."
        target = workspace / name
        from mmat.sandbox import safefs

        with safefs.root(workspace) as fd:  # through the workspace's fd: never follows what is there
            safefs.unlink(fd, name)
        step = sandbox.run(code)
        if step.error is not None:
            text = step.error.traceback.strip() or f"{step.error.type}: {step.error.message}"
            return text[-MAX_ERROR_CHARS:]
        problem = check_file(target, fmt)
        if problem == "missing":
            made = ", ".join(step.new_files) or "none"
            return (f"The script ran without errors but did not create '{name}' in the current directory "
                    f"(files it created: {made}). Save the file under exactly that name.")
        if problem is not None:
            return f"The script created '{name}', but {problem}."
        return None
