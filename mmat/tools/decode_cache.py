"""What the bounded decoders returned for inputs seen before: a process-wide LRU keyed by a digest.

Why: an agent reads the same workspace file at step after step (the table it is working on), and every
decode costs a fork of the decoding forkserver and 20-30 ms of CPU (markitdown sniffs the content with an
ONNX model even when the extension says CSV). At synthesis rates that was most of a run's CPU outside the
LM calls. A decode is a pure function of (job, input bytes, arguments, limits), so its result can be
reused as long as it cannot be changed by whoever receives it: only successes built of immutable values
(str, bytes, numbers, tuples of them) are kept -- a numpy array or a failure (a timeout may not repeat)
never is -- within :data:`CACHE_BYTES` in all and :data:`ENTRY_BYTES` per entry, least recently used
first out. Model code can make the parent decode many distinct files, but never hold more than the
budget, and a digest of the full input (BLAKE2b-256) cannot be collided on purpose.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["DecodeCache", "decode_cache", "CACHE_BYTES", "ENTRY_BYTES"]

CACHE_BYTES = 64 * 1024 * 1024
ENTRY_BYTES = 16 * 1024 * 1024
_SCALARS = (str, bytes, int, float, bool, type(None))


def _size(value: Any) -> int | None:
    """Approximate bytes held by ``value``; None when it is (or holds) something mutable."""
    if isinstance(value, (str, bytes)):
        return len(value) + 64
    if isinstance(value, _SCALARS):
        return 32
    if isinstance(value, tuple):
        total = 64
        for item in value:
            size = _size(item)
            if size is None:
                return None
            total += size
        return total
    return None


def cache_key(job: str, args: tuple[Any, ...], limits: tuple[Any, ...]) -> bytes | None:
    """Digest of a decode request; None when an argument is not a plain value (then nothing is cached)."""
    digest = hashlib.blake2b(digest_size=32)
    for part in (job, *args, *limits):
        if isinstance(part, (bytes, bytearray, memoryview)):
            data = bytes(part)
            digest.update(b"b%d:" % len(data))
            digest.update(data)
        elif isinstance(part, _SCALARS):
            text = repr(part).encode()
            digest.update(b"r%d:" % len(text))
            digest.update(text)
        else:
            return None
    return digest.digest()


class DecodeCache:
    """A thread-safe LRU of decode results within a byte budget."""

    def __init__(self, max_bytes: int = CACHE_BYTES, entry_bytes: int = ENTRY_BYTES) -> None:
        self.max_bytes, self.entry_bytes = max_bytes, entry_bytes
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: bytes | None) -> tuple[bool, Any]:
        """(True, value) for a kept result, else (False, None)."""
        if key is None:
            return False, None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return False, None
            self._entries.move_to_end(key)
            self.hits += 1
            return True, entry[0]

    def put(self, key: bytes | None, value: Any) -> bool:
        """Keep ``value`` if it is immutable and small enough; whether it was kept."""
        size = _size(value)
        if key is None or size is None or size > self.entry_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


decode_cache = DecodeCache()
