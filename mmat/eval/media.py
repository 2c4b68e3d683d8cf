"""Benchmark media as an agent can use them: image types read from the bytes, videos turned into frames.

Agent-X ships ``.jpg`` files that hold PNG or WebP bytes, and videos (mp4/avi/mov) referenced like
images. Images are given to the agent under a name whose extension matches their bytes (a copy under
``media_dir``; the original is never changed). A video becomes up to four frames taken with OpenCV at
0, 10, 20 and 30 s (configurable; times past the end are skipped, as the benchmark's own loader does),
saved as JPEG. Each step is described in a note recorded with the item.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from mmat.ids import sha256_file

__all__ = ["sniff_image", "prepare_image", "video_frames", "VIDEO_SUFFIXES", "FRAME_TIMES_S", "MediaError"]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
FRAME_TIMES_S: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0)
_END_SLACK_S = 0.05  # a time this close past the end still reads the last frame

_IMAGE_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, ".png"),
    (b"\xff\xd8\xff", 0, ".jpg"),
    (b"GIF87a", 0, ".gif"),
    (b"GIF89a", 0, ".gif"),
    (b"BM", 0, ".bmp"),
    (b"II*\x00", 0, ".tif"),
    (b"MM\x00*", 0, ".tif"),
)
_SAME_TYPE = {".jpeg": ".jpg", ".jpe": ".jpg", ".tiff": ".tif"}


class MediaError(ValueError):
    """A media file the agent cannot be given (the message is the reason shown with the item's key)."""


def sniff_image(path: Path) -> str | None:
    """The image type the bytes say (``.png``, ``.jpg``, ``.webp``, ...), or None when they are no known image."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise MediaError(f"cannot read {path.name}: {e.strerror or e}") from None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    for magic, offset, suffix in _IMAGE_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return suffix
    return None


def prepare_image(path: Path, media_dir: Path) -> tuple[Path, str | None]:
    """``path`` itself when its extension matches its bytes; else a copy named by the real type, and a note."""
    real = sniff_image(path)
    if real is None:
        raise MediaError(f"{path.name} is not an image OpenCV or PIL can read (unknown bytes)")
    declared = _SAME_TYPE.get(path.suffix.lower(), path.suffix.lower())
    if declared == real:
        return path, None
    target = media_dir / sha256_file(path)[:16] / (path.stem + real)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return target, f"{path.name} holds {real[1:].upper()} bytes: given to the agent as {target.name}"


def video_frames(path: Path, media_dir: Path, times_s: Sequence[float] = FRAME_TIMES_S) -> tuple[list[Path], str]:
    """Frames of a video at ``times_s`` (those within its length) as JPEG files, and a note saying which."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MediaError(f"video {path.name} cannot be opened by OpenCV")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        duration = count / fps if fps > 0 and count > 0 else None
        out_dir = media_dir / sha256_file(path)[:16]
        frames: list[Path] = []
        taken: list[float] = []
        for t in times_s:
            if duration is not None and t > duration + _END_SLACK_S:
                continue
            capture.set(cv2.CAP_PROP_POS_MSEC, float(t) * 1000.0)
            ok, frame = capture.read()
            if not ok or frame is None:
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{path.stem}_frame{len(frames) + 1}_{t:g}s.jpg"
            if not cv2.imwrite(str(target), frame):
                raise MediaError(f"cannot write frame {target.name} of video {path.name}")
            frames.append(target)
            taken.append(t)
    finally:
        capture.release()
    if not frames:
        raise MediaError(f"video {path.name} has no frame OpenCV can decode")
    length = f"{duration:.1f} s" if duration is not None else "unknown length"
    at = "/".join(f"{t:g}" for t in taken)
    return frames, f"video {path.name} ({length}) given as {len(frames)} frame(s) at {at} s"
