"""Content-addressed files: ``<home>/blobs/ab/<sha256><suffix>``.

Why content addressing: the same image produced twice (a rerun, two tasks sharing a pool image) is
stored once, its path is its identity (tables store the relative path and the sha256), and a blob
never changes after it is written. Writes go to a temporary file in the target folder, are fsynced,
then renamed into place, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from mmat.errors import StoreError

__all__ = ["BlobStore"]

_SUFFIX = re.compile(r"^(\.[A-Za-z0-9_-]{1,16}){0,2}$")  # "", ".png", ".tar.gz"


def safe_suffix(path: Path) -> str:
    """The file's extension when the blob store accepts it, else none (a model may name files ``x.c++``)."""
    suffix = Path(path).suffix
    return suffix if _SUFFIX.match(suffix) else ""
_CHUNK = 1 << 20


class BlobStore:
    """Blobs under one root folder; ``put`` is idempotent and atomic."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, data: bytes | bytearray | memoryview | Path, suffix: str = "") -> tuple[str, str]:
        """Store bytes or a file's content; return (path relative to the root, sha256 hex)."""
        if not _SUFFIX.match(suffix):
            raise StoreError(f"blob suffix {suffix!r} is not a file extension: pass e.g. '.png' or ''")
        if isinstance(data, (bytes, bytearray, memoryview)):
            sha = hashlib.sha256(data).hexdigest()
            rel, final = self._where(sha, suffix)
            if not final.exists():
                self._write_atomic(final, lambda f: f.write(data))
            return rel, sha
        if isinstance(data, (str, os.PathLike)):
            return self._put_file(Path(data), suffix)
        raise StoreError(f"put_blob takes bytes or a Path, not {type(data).__name__}")

    def path(self, rel: str) -> Path:
        """Absolute path of a blob from the relative path ``put`` returned (refuses paths outside the root)."""
        p = PurePosixPath(rel)
        if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
            raise StoreError(f"blob path {rel!r} is not inside the blob store: pass the path that put_blob returned")
        return self.root.joinpath(*p.parts)

    def _where(self, sha: str, suffix: str) -> tuple[str, Path]:
        rel = f"{sha[:2]}/{sha}{suffix}"
        return rel, self.root / sha[:2] / f"{sha}{suffix}"

    def _put_file(self, src: Path, suffix: str) -> tuple[str, str]:
        if not src.is_file():
            raise StoreError(f"{src} is not a file: pass an existing file or its bytes")
        # One pass: copy into a temporary file in the root while hashing, then rename to the hash name.
        self.root.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                while block := f.read(_CHUNK):
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha = h.hexdigest()
            rel, final = self._where(sha, suffix)
            if final.exists():
                os.unlink(tmp)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
            return rel, sha
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _write_atomic(self, final: Path, write) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)  # atomic on POSIX; a concurrent writer of the same blob writes the same bytes
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
