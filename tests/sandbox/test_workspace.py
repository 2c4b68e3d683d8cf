"""Host-side workspace bookkeeping (no root needed)."""

from __future__ import annotations

import os

import pytest

from mmat.errors import SandboxError
from mmat.sandbox.workspace import changed_files, copy_inputs, mirror, remove_new_files, sanitize, scan


def test_sanitize_removes_links_and_special_files_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep.txt").write_text("k")
    os.symlink("/etc/passwd", tmp_path / "passwd")
    os.symlink("keep.txt", tmp_path / "sub" / "inner_link")
    os.symlink("sub", tmp_path / "dir_link")
    os.mkfifo(tmp_path / "sub" / "fifo")
    removed = sanitize(tmp_path)
    assert sorted(removed) == ["dir_link", "passwd", "sub/fifo", "sub/inner_link"]
    assert sorted(os.listdir(tmp_path)) == ["sub"] and os.listdir(tmp_path / "sub") == ["keep.txt"]


def test_changed_and_new_files(tmp_path):
    (tmp_path / "a").write_text("1")
    before = scan(tmp_path)
    (tmp_path / "a").write_text("22")
    (tmp_path / "b").write_text("3")
    after = scan(tmp_path)
    assert changed_files(before, after) == ["a", "b"]
    assert after.total_bytes == 3
    assert remove_new_files(tmp_path, before, after) == ["b"] and not (tmp_path / "b").exists()


def test_mirror_makes_a_copy_identical(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_text("x")
    (src / "y").write_text("y")
    (dst / "extra_dir").mkdir(parents=True)
    (dst / "y").write_text("stale")
    (dst / "z").write_text("z")
    mirror(src, dst)
    assert {p.relative_to(dst).as_posix() for p in dst.rglob("*")} == {"d", "d/x", "y"}
    assert (dst / "y").read_text() == "y"


def test_copy_inputs(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "in.txt").write_text("i")
    (ws / "already.txt").write_text("a")
    assert copy_inputs(ws, [tmp_path / "in.txt", ws / "already.txt"]) == ["in.txt", "already.txt"]
    with pytest.raises(SandboxError, match="collides"):
        copy_inputs(ws, [tmp_path / "in.txt"])


def test_mirror_since_a_scan_keeps_what_was_written_into_dst_meanwhile(tmp_path):
    """Rootless close: the sandbox's tmpfs (src) is mirrored into the directory (dst); what the sandbox
    deleted goes, what someone wrote into the directory by path meanwhile stays, src wins on a name."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (dst / "old").mkdir(parents=True)
    for rel in ("deleted.txt", "old/gone.txt", "both.txt", "kept.txt"):
        (dst / rel).write_text("start")
    at_start = scan(dst)
    (src / "d").mkdir(parents=True)
    (src / "kept.txt").write_text("start")
    (src / "both.txt").write_text("from the sandbox")
    (src / "d" / "made.txt").write_text("made")
    os.utime(src / "kept.txt", ns=(at_start.files["kept.txt"].mtime_ns,) * 2)
    (dst / "late").mkdir()
    (dst / "late" / "by_path.txt").write_text("written meanwhile")
    (dst / "both.txt").write_text("written meanwhile too")
    mirror(src, dst, since=at_start)
    got = {p.relative_to(dst).as_posix(): p.read_text() for p in dst.rglob("*") if p.is_file()}
    assert got == {"kept.txt": "start", "both.txt": "from the sandbox", "d/made.txt": "made", "late/by_path.txt": "written meanwhile"}
    assert not (dst / "old").exists()
