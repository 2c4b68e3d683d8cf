"""Content-hash IDs: an ID is a hash of what made it, so reruns find (and skip) what already exists."""

import hashlib
import json
from typing import Any

__all__ = ["content_id", "sha256_bytes", "sha256_file", "task_id_for", "traj_id_for"]

ID_HEX_CHARS = 20  # 80 bits: no collision in any store mmat will see, still short enough to read


def _canonical(part: Any) -> str:
    if isinstance(part, str):
        return part
    return json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)


def content_id(*parts: Any) -> str:
    """Stable ID from any JSON-able parts: content_id("task", run_id, seed_idx)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(_canonical(part).encode())
        h.update(b"\x1f")  # unit separator: ("ab","c") != ("a","bc")
    return h.hexdigest()[:ID_HEX_CHARS]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def task_id_for(run_id: str, seed_idx: int, key: Any) -> str:
    """A synthesized task's id: its run, its seed and its key within the seed (the spec index)."""
    return content_id("task", run_id, seed_idx, key)


def traj_id_for(task_id: str, attempt: int, controller: str) -> str:
    """An agent attempt's id: its task, the attempt number and the controller model."""
    return content_id("traj", task_id, attempt, controller)
