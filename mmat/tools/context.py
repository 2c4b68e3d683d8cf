"""What a backend gets for one call: the workspace, the settings and the text model.

The sandboxed agent names files relative to its working directory, which *is* the workspace, or
under ``/workspace/`` (where the sandbox mounts it). Every path argument goes through
:meth:`ToolContext.resolve` so a tool never reads or writes outside the workspace, whatever the
model writes (``../``, absolute paths, symlinks pointing out).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat.errors import ModelOutputError
from mmat.tools.errors import ToolArgumentError, ToolError, ToolUnavailableError
from mmat.tools.registry import ToolEnv

if TYPE_CHECKING:  # pragma: no cover
    import dspy
    from PIL import Image

    from mmat.config import Settings

__all__ = ["ToolContext", "SANDBOX_MOUNT", "MAX_IMAGE_PIXELS"]

SANDBOX_MOUNT = "/workspace"  # where the sandbox mounts the workspace
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused: decoding them could exhaust host memory
_LISTED_FILES = 12  # files named in a "not found" message, so the model can pick the right one


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

    # --- paths -----------------------------------------------------------------------------------
    def resolve(self, tool: str, arg: str, *, what: str = "file") -> Path:
        """Host path of an existing workspace file named by the model, or a ToolArgumentError."""
        path = self.inside(tool, arg)
        if not path.exists():
            raise ToolArgumentError(f"{tool}: cannot open {what} '{arg}': file not found in the workspace. {self._listing()}")
        if not path.is_file():
            raise ToolArgumentError(f"{tool}: '{arg}' is a directory, not a {what}; pass a file path. {self._listing()}")
        return path

    def inside(self, tool: str, arg: str) -> Path:
        """Map ``x.png``, ``./x.png`` or ``/workspace/x.png`` to the host workspace; refuse anything outside."""
        text = str(arg).strip()
        if not text:
            raise ToolArgumentError(f"{tool}: the file path is empty; pass a file name such as 'image.png'")
        if text == SANDBOX_MOUNT or text.startswith(SANDBOX_MOUNT + "/"):
            text = text[len(SANDBOX_MOUNT) :].lstrip("/") or "."
        candidate = Path(text)
        path = (candidate if candidate.is_absolute() else self.workspace / candidate).resolve()
        if path != self.workspace and not path.is_relative_to(self.workspace):
            raise ToolArgumentError(
                f"{tool}: path '{arg}' is outside the workspace; tools only read and write files in the "
                "workspace, so use a name relative to it such as 'image.png'"
            )
        return path

    def name_of(self, path: Path) -> str:
        """How the agent should refer to a workspace file: its path relative to the workspace."""
        return path.resolve().relative_to(self.workspace).as_posix()

    def _listing(self) -> str:
        files = sorted(p.relative_to(self.workspace).as_posix() for p in self.workspace.rglob("*") if p.is_file())
        if not files:
            return "The workspace holds no files."
        more = f" (and {len(files) - _LISTED_FILES} more)" if len(files) > _LISTED_FILES else ""
        return f"Files in the workspace: {', '.join(files[:_LISTED_FILES])}{more}."

    def output_path(self, prefix: str, suffix: str = ".png") -> Path:
        """A new, reserved file ``<prefix>_<n><suffix>``: n is one more than any existing one.

        The file is created with O_EXCL, so concurrent calls never hand out the same name.
        """
        taken = [p.name[len(prefix) + 1 : -len(suffix)] for p in self.workspace.glob(f"{prefix}_*{suffix}")]
        n = max([int(t) for t in taken if t.isdigit()], default=0) + 1
        while True:
            path = self.workspace / f"{prefix}_{n}{suffix}"
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return path
            except FileExistsError:
                n += 1

    # --- images ----------------------------------------------------------------------------------
    def open_image(self, tool: str, arg: str) -> tuple[Image.Image, Path]:
        """Decode a workspace image as RGB (EXIF rotation applied) or raise a ToolArgumentError the model can act on."""
        from PIL import Image, ImageOps, UnidentifiedImageError

        path = self.resolve(tool, arg, what="image")
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ToolArgumentError(
                        f"{tool}: image '{arg}' is {img.width}x{img.height} pixels, more than the "
                        f"{MAX_IMAGE_PIXELS:,} this tool accepts; resize it first (e.g. with image_edit)"
                    )
                img.load()
                rgb = ImageOps.exif_transpose(img).convert("RGB")
        except UnidentifiedImageError:
            raise ToolArgumentError(
                f"{tool}: cannot open image '{arg}': it is not an image file that can be decoded "
                "(corrupt, empty or not an image); check the file name or use inspect_file_as_text for documents"
            ) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ToolArgumentError(f"{tool}: cannot open image '{arg}': the file is damaged or truncated ({e})") from None
        return rgb, path

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
