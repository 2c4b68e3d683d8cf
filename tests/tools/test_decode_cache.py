"""The decode cache: the same bytes are decoded once, failures and mutable results never kept, the budget holds."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from mmat.tools import bounded
from mmat.tools.decode_cache import DecodeCache, cache_key


@pytest.fixture
def children(monkeypatch):
    """Count the decoder children started (the real ones still run), on an empty cache."""
    started: list[str] = []
    real = bounded._run_in_child

    def counted(job, args, timeout_s, memory_mb):
        started.append(job)
        return real(job, args, timeout_s, memory_mb)

    bounded.decode_cache.clear()
    monkeypatch.setattr(bounded, "_run_in_child", counted)
    yield started
    bounded.decode_cache.clear()


def _png(color: tuple[int, int, int], size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_same_bytes_are_decoded_once(children):
    csv = b"category,amount\nrent,950\n"
    first = bounded.run_bounded("document", csv, ".csv", "march.csv")
    again = bounded.run_bounded("document", csv, ".csv", "march.csv")
    assert again == first and first[0] == "ok" and "rent" in first[1]
    assert children == ["document"]
    bounded.run_bounded("document", csv + b"food,412\n", ".csv", "march.csv")  # other bytes: decoded
    bounded.run_bounded("document", csv, ".txt", "march.txt")  # other arguments: decoded
    assert children == ["document"] * 3


def test_images_keep_their_pixels_and_other_limits_decode_again(children):
    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    size, pixels = bounded.run_bounded("image", red, 10**6)
    assert size == (8, 6) and pixels[:3] == b"\xff\x00\x00"
    assert bounded.run_bounded("image", red, 10**6) == (size, pixels)
    assert bounded.run_bounded("image", blue, 10**6)[1][:3] == b"\x00\x00\xff"
    bounded.run_bounded("image", red, 10**6, memory_mb=1024)  # a different budget is a different request
    assert children == ["image", "image", "image"]


def test_failures_are_never_kept(children):
    bomb = _png((0, 0, 0), size=(2000, 2000))
    for _ in range(2):
        with pytest.raises(bounded.BoundedFailure) as failure:
            bounded.run_bounded("image", bomb, 1000)  # over the pixel budget: refused in the child
        assert failure.value.kind == "refused"
    assert children == ["image", "image"]
    assert len(bounded.decode_cache) == 0


def test_mutable_or_large_results_are_not_kept():
    cache = DecodeCache(max_bytes=10_000, entry_bytes=1_000)
    assert not cache.put(b"k1", np.zeros(4, np.float32))  # an array the caller could change
    assert not cache.put(b"k2", ("ok", ["list"]))
    assert not cache.put(b"k3", {"a": 1})
    assert not cache.put(b"k4", "x" * 2_000)  # over the per-entry budget
    assert not cache.put(None, "ok")  # a request that had no key
    assert len(cache) == 0
    assert cache.put(b"k5", ((8, 6), b"\x00" * 100)) and cache.get(b"k5") == (True, ((8, 6), b"\x00" * 100))


def test_budget_drops_least_recently_used_first():
    cache = DecodeCache(max_bytes=3 * 564, entry_bytes=1_000)  # three 500-char strings (each counted 564)
    for name in (b"a", b"b", b"c"):
        cache.put(name, "x" * 500)
    assert cache.get(b"a")[0]  # a is now the most recent
    cache.put(b"d", "y" * 500)
    assert [cache.get(k)[0] for k in (b"a", b"b", b"c", b"d")] == [True, False, True, True]
    assert cache.size_bytes <= cache.max_bytes


def test_budget_holds_under_concurrent_puts():
    cache = DecodeCache(max_bytes=50_000, entry_bytes=5_000)

    def fill(worker: int) -> None:
        for i in range(400):
            cache.put(f"{worker}-{i}".encode(), "z" * (100 + i % 900))
            cache.get(f"{worker}-{i // 2}".encode())

    threads = [threading.Thread(target=fill, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = sum(size for _, size in cache._entries.values())
    assert kept == cache.size_bytes <= cache.max_bytes


def test_keys_tell_argument_boundaries_and_types_apart():
    limits = (30.0, 1536)
    assert cache_key("document", (b"ab", "c"), limits) != cache_key("document", (b"a", "bc"), limits)
    assert cache_key("document", (b"ab", "c"), limits) != cache_key("document", ("ab", "c"), limits)
    assert cache_key("image", (b"x", 10), limits) != cache_key("image", (b"x", "10"), limits)
    assert cache_key("image", (b"x", 10), limits) != cache_key("image", (b"x", 10), (30.0, 1024))
    assert cache_key("image", (b"x", object()), limits) is None
