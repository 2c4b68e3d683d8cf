"""Content-addressed blobs: layout, idempotence, atomicity, path safety."""

import hashlib
import os

import pytest

from mmat.errors import StoreError


def test_bytes_land_under_their_hash(store, mmat_home):
    data = b"\x89PNG fake image bytes"
    sha = hashlib.sha256(data).hexdigest()
    rel, got_sha = store.put_blob(data, ".png")
    assert got_sha == sha
    assert rel == f"{sha[:2]}/{sha}.png"
    assert store.blob_path(rel) == mmat_home / "blobs" / sha[:2] / f"{sha}.png"
    assert store.blob_path(rel).read_bytes() == data


def test_idempotent_and_never_rewritten(store):
    rel, _ = store.put_blob(b"same", ".txt")
    before = os.stat(store.blob_path(rel))
    assert store.put_blob(b"same", ".txt") == (rel, hashlib.sha256(b"same").hexdigest())
    assert os.stat(store.blob_path(rel)).st_mtime_ns == before.st_mtime_ns
    assert store.put_blob(bytearray(b"same"), ".txt")[0] == rel


def test_file_source_matches_bytes_source(store, tmp_path):
    src = tmp_path / "doc.pdf"
    payload = os.urandom(3 * (1 << 20) + 17)  # spans several copy chunks
    src.write_bytes(payload)
    rel_file, sha_file = store.put_blob(src, ".pdf")
    assert (rel_file, sha_file) == store.put_blob(payload, ".pdf")
    assert store.blob_path(rel_file).read_bytes() == payload
    assert store.put_blob(src, ".pdf") == (rel_file, sha_file)


def test_no_temporary_files_are_left(store):
    for i in range(5):
        store.put_blob(f"blob {i}".encode(), ".bin")
    names = [p.name for p in store.blobs_dir.rglob("*")]
    assert not [n for n in names if n.startswith(".tmp-")]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in store.blobs_dir.rglob("*.bin"))


@pytest.mark.parametrize("suffix", ["png", "/etc", ".a/b", ".." , ".x" * 3, ".thisextensionistoolong"])
def test_bad_suffix_is_refused(store, suffix):
    with pytest.raises(StoreError, match="is not a file extension"):
        store.put_blob(b"x", suffix)


@pytest.mark.parametrize("rel", ["", "/etc/passwd", "../outside", "ab/../../x", "ab\\..\\x"])
def test_paths_outside_the_blob_store_are_refused(store, rel):
    with pytest.raises(StoreError, match="is not inside the blob store"):
        store.blob_path(rel)


def test_missing_source_file(store, tmp_path):
    with pytest.raises(StoreError, match="is not a file: pass an existing file or its bytes"):
        store.put_blob(tmp_path / "missing.png", ".png")
    with pytest.raises(StoreError, match="takes bytes or a Path, not int"):
        store.put_blob(3)


def test_safe_suffix_keeps_extensions_the_store_accepts():
    from pathlib import Path

    from mmat.store.blobs import safe_suffix

    assert [safe_suffix(Path(n)) for n in ("a.csv", "b.tar.gz", "c.c++", "noext")] == [".csv", ".gz", "", ""]
