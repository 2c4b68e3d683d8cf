"""What a backend gets for one call: the workspace, the settings and the text model.

The sandboxed agent names files relative to its working directory, which *is* the workspace, or
under ``/workspace/`` (where the sandbox mounts it). Code in the sandbox may swap any workspace
entry for a symlink, FIFO or device at any moment, so a backend never gets a path: it gets the
file's bytes (:meth:`ToolContext.read_file`, :meth:`ToolContext.open_image`) or an output file
object (:meth:`ToolContext.new_output`), all opened through a directory fd of the workspace
without following any link (``mmat.sandbox.safefs``). Untrusted bytes are decoded in a bounded
child process (``mmat.tools.bounded``).
"""

from __future__ import annotations


import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mmat.errors import ModelOutputError
from mmat.sandbox import safefs
from mmat.tools.errors import ToolArgumentError, ToolError, ToolUnavailableError
from mmat.tools.registry import ToolEnv

if TYPE_CHECKING:  # pragma: no cover
    import dspy
    from PIL import Image

    from mmat.config import Settings

__all__ = ["ToolContext", "WorkspaceFile", "SANDBOX_MOUNT", "MAX_IMAGE_PIXELS", "MAX_INPUT_BYTES"]

SANDBOX_MOUNT = "/workspace"  # where the sandbox mounts the workspace
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused: decoding them could exhaust host memory
MAX_INPUT_BYTES = 64 * 1024 * 1024  # the sandbox's default file-size limit: no input a tool reads is larger
_LISTED_FILES = 12  # files named in a "not found" message, so the model can pick the right one


@dataclass(frozen=True)
class WorkspaceFile:
    """A workspace file as a backend sees it: its name relative to the workspace and its bytes."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1].lower()


class ToolContext:
    """Per-host state shared by every call: resolved workspace, settings, text model, pool captions."""

    def __init__(
        self,
        settings: Settings,
        workspace: Path,
        *,
        lm: dspy.LM | None = None,
        caption_lookup: Callable[[Path], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = Path(workspace).resolve()
        self.lm = lm
        self.caption_lookup = caption_lookup

    @property
    def env(self) -> ToolEnv:
        return ToolEnv(self.settings, getattr(self.lm, "model", None) if self.lm is not None else None)

    # --- names -----------------------------------------------------------------------------------
    def relative(self, tool: str, arg: str) -> str:
        """Map ``x.png``, ``./x.png``, ``/workspace/x.png`` (or the host path of the workspace) to a
        normalized name relative to the workspace; refuse anything outside it. Purely lexical: the
        name is then opened with no symlink allowed, so the lexical answer is the real one."""
        text = str(arg).strip()
        if not text:
            raise ToolArgumentError(f"{tool}: the file path is empty; pass a file name such as 'image.png'")
        if "\x00" in text:
            raise ToolArgumentError(f"{tool}: the file path contains a NUL character; pass a plain file name such as 'image.png'")
        host = self.workspace.as_posix()
        for prefix in (SANDBOX_MOUNT, host):
            if text == prefix or text.startswith(prefix + "/"):
                text = text[len(prefix) :].lstrip("/") or "."
                break
        norm = posixpath.normpath(text)
        if text.startswith("/") or norm == ".." or norm.startswith("../"):
            raise ToolArgumentError(
                f"{tool}: path '{_short(arg)}' is outside the workspace; tools only read and write files in the "
                "workspace, so use a name relative to it such as 'image.png'"
            )
        try:
            safefs.split_name(norm)
        except safefs.UnsafePath as e:
            raise ToolArgumentError(f"{tool}: cannot use the file path '{_short(arg)}': {e.strerror}") from None
        return "" if norm == "." else norm

    # --- reading ---------------------------------------------------------------------------------
    def read_file(self, tool: str, arg: str, *, what: str = "file", max_bytes: int = MAX_INPUT_BYTES) -> WorkspaceFile:
        """The bytes of an existing regular workspace file named by the model, or a ToolArgumentError."""
        name = self.relative(tool, arg)
        shown = _short(arg)
        if not name:
            raise ToolArgumentError(f"{tool}: '{shown}' is the workspace directory, not a {what}; pass a file path. {self._listing()}")
        try:
            with safefs.root(self.workspace) as fd:
                data = safefs.read_bytes(fd, name, max_bytes)
        except FileNotFoundError:
            raise ToolArgumentError(f"{tool}: cannot open {what} '{shown}': file not found in the workspace. {self._listing()}") from None
        except safefs.NotRegularFile as e:
            if e.kind == "directory":
                raise ToolArgumentError(f"{tool}: '{shown}' is a directory, not a {what}; pass a file path. {self._listing()}") from None
            raise ToolArgumentError(f"{tool}: '{shown}' is a {e.kind}, not a regular file; tools only read regular files") from None
        except safefs.FileTooLarge as e:
            raise ToolArgumentError(f"{tool}: {what} '{shown}' is {e.size:,} bytes, more than the {e.limit:,} a tool reads") from None
        except safefs.UnsafePath:
            raise ToolArgumentError(
                f"{tool}: '{shown}' is or passes through a symbolic link, which could point outside the workspace; "
                "tools only open regular files in the workspace"
            ) from None
        except NotADirectoryError:
            raise ToolArgumentError(f"{tool}: cannot open {what} '{shown}': a part of the path is a file, not a directory") from None
        except OSError as e:
            raise ToolArgumentError(f"{tool}: cannot open {what} '{shown}' ({e.strerror or type(e).__name__})") from None
        return WorkspaceFile(name, data)

    def _listing(self) -> str:
        try:
            with safefs.root(self.workspace) as fd:
                files = sorted(e.rel for e in safefs.walk(fd, max_depth=8) if stat.S_ISREG(e.st.st_mode))
        except OSError:
            files = []
        if not files:
            return "The workspace holds no files."
        more = f" (and {len(files) - _LISTED_FILES} more)" if len(files) > _LISTED_FILES else ""
        return f"Files in the workspace: {', '.join(_short(f) for f in files[:_LISTED_FILES])}{more}."

    # --- writing ---------------------------------------------------------------------------------
    @contextmanager
    def new_output(self, prefix: str, suffix: str = ".png") -> Iterator[tuple[str, BinaryIO]]:
        """``with ctx.new_output("edited") as (name, f): image.save(f, format="PNG")``.

        A new file ``<prefix>_<n><suffix>`` in the workspace root, n one more than any existing one,
        created O_CREAT | O_EXCL | O_NOFOLLOW from the workspace's fd: concurrent calls never share a
        name, and a name the sandbox planted (a symlink included) is skipped, never written through.
        If the body raises, the file is removed again.
        """
        with safefs.root(self.workspace) as root:
            taken = [n[len(prefix) + 1 : -len(suffix)] for n in os.listdir(root) if n.startswith(prefix + "_") and n.endswith(suffix)]
            n = max([int(t) for t in taken if t.isdigit() and len(t) < 12], default=0) + 1
            while True:
                name = f"{prefix}_{n}{suffix}"
                try:
                    fd = safefs.create_exclusive(root, name, 0o644)
                    break
                except FileExistsError:
                    n += 1
            f = os.fdopen(fd, "wb")
            try:
                with f:
                    yield name, f
            except BaseException:
                safefs.unlink(root, name)
                raise

    # --- images ----------------------------------------------------------------------------------
    def open_image(self, tool: str, arg: str) -> tuple[Image.Image, str]:
        """(RGB image with EXIF rotation applied, its workspace name), or a ToolArgumentError the model can act on.

        The bytes are decoded in a bounded child process (pixel budget, memory, time)."""
        from mmat.tools.bounded import decode_image

        f = self.read_file(tool, arg, what="image")
        return decode_image(tool, f, max_pixels=MAX_IMAGE_PIXELS), f.name

    # --- the text model --------------------------------------------------------------------------
    def predict(self, tool: str, signature: type, **inputs: Any) -> Any:
        """Run a typed signature on the tool's text model; an unusable answer becomes a ToolError."""
        if self.lm is None:
            raise ToolUnavailableError(f"{tool} needs a text model and none was given to the tool host.")
        return run_signature(self.lm, signature, tool, **inputs)


def run_signature(lm: dspy.LM, signature: type, tool: str, **inputs: Any) -> Any:
    """``dspy.Predict(signature)`` under ``lm`` and its adapter; the model's unusable answers become ToolErrors.

    A model that answered in the wrong shape is the model's failure, so the agent sees it as an
    observation. A model that cannot be reached (ModelUnavailableError from the provider, wrapped by
    DSPy and litellm) is the user's to fix, so it is unwrapped and raised.
    """
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    from mmat.lm import adapter_for, model_error

    try:
        with dspy.context(lm=lm, adapter=adapter_for(lm.model)):
            return dspy.Predict(signature)(**inputs)
    except AdapterParseError as e:
        raise ToolError(
            f"{tool}: the model behind this tool ({lm.model}) answered in a shape that could not be used "
            f"({_first_line(str(e))}); rephrase the request more simply and call {tool} again"
        ) from None
    except Exception as e:  # noqa: BLE001 - only to unwrap mmat errors; everything else is re-raised as is
        cause = model_error(e)
        if isinstance(cause, ModelOutputError):
            raise ToolError(f"{tool}: the model behind this tool ({lm.model}) gave an unusable answer ({_first_line(str(cause))})") from None
        if cause is not None and cause is not e:
            raise cause from e
        raise


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _short(text: object, limit: int = 120) -> str:
    """A model-written name as it appears in a message: cut, with control characters made visible."""
    from mmat.sandbox.escape import escape_text

    value = escape_text(str(text))
    return value if len(value) <= limit else value[: limit - 3] + "..."
