"""Where an export's images and files live: copied next to the data, linked, or embedded in it.

Modes (``--images``):

- ``copy`` (default for file-based formats): every file is copied once into the export folder under
  ``images/`` or ``files/`` and named by its sha256; rows hold the path *relative to the export
  folder*, so the folder can be moved, zipped or shared.
- ``link``: the same relative names, but hard links to the store's blobs (symbolic links where the
  export is on another file system): no extra disk, yet the folder breaks if ``MMAT_HOME`` goes away.
- ``embed``: the bytes travel inside the rows (data URLs in JSON, image bytes in HF datasets).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import shutil
from pathlib import Path

from mmat.errors import ConfigError

__all__ = ["IMAGE_MODES", "MediaSink", "data_url"]

IMAGE_MODES = ("copy", "link", "embed")
_CHUNK = 1 << 20


def data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


class MediaSink:
    """Turns a file the store holds into the reference a row carries (see module docstring)."""

    def __init__(self, out_dir: Path, mode: str):
        if mode not in IMAGE_MODES:
            raise ConfigError(f"--images {mode!r}: choose one of {', '.join(IMAGE_MODES)}")
        self.out_dir = Path(out_dir)
        self.mode = mode
        self._done: dict[tuple[Path, str], str] = {}

    @property
    def n_placed(self) -> int:
        """Distinct files referenced so far."""
        return len(self._done)

    def ref(self, source: str | Path, folder: str = "images") -> str:
        """The reference for ``source`` (an absolute path, or a data URL that is passed through or written out)."""
        source = str(source)
        if source.startswith("data:"):
            if self.mode == "embed":
                return source
            return self._write_data_url(source, folder)
        path = Path(source)
        key = (path, folder)
        if key in self._done:
            return self._done[key]
        if not path.is_file():
            raise ConfigError(f"{path} is missing from the store's blobs: restore MMAT_HOME/blobs or narrow --where.")
        if self.mode == "embed":
            ref = data_url(path)
        else:
            ref = self._place(path, f"{folder}/{_sha256(path)}{path.suffix.lower()}")
        self._done[key] = ref
        return ref

    def _place(self, path: Path, rel: str) -> str:
        target = self.out_dir / rel
        if target.exists():
            return rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        if self.mode == "copy":
            shutil.copyfile(path, tmp)
        else:
            try:
                os.link(path, tmp)
            except OSError:  # another file system (or no hard links there): a symbolic link to the blob
                os.symlink(path.resolve(), tmp)
        os.replace(tmp, target)
        return rel

    def _write_data_url(self, url: str, folder: str) -> str:
        header, _, payload = url.partition(",")
        raw = base64.b64decode(payload)
        ext = mimetypes.guess_extension(header[5:].split(";")[0]) or ""
        rel = f"{folder}/{hashlib.sha256(raw).hexdigest()}{ext}"
        target = self.out_dir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
        return rel
