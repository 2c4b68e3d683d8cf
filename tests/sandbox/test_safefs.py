"""safefs: opening below a directory fd never follows a link and never opens a special file, with
openat2 and with the O_NOFOLLOW walk the module falls back to."""

from __future__ import annotations

import os

import pytest

from mmat.sandbox import safefs


@pytest.fixture(params=["openat2", "walk"])
def mode(request, monkeypatch):
    if request.param == "openat2" and not safefs.has_openat2():
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(safefs, "_openat2_works", request.param == "openat2")
    return request.param


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f.txt").write_text("inside")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "f.txt").write_text("outside")
    (root / "up").symlink_to(tmp_path / "secret")
    (root / "d" / "link.txt").symlink_to(tmp_path / "secret" / "f.txt")
    (root / "d" / "rel").symlink_to("e")
    os.mkfifo(root / "fifo")
    return root


def test_regular_files_are_read(mode, tree):
    with safefs.root(tree) as fd:
        assert safefs.read_bytes(fd, "d/e/f.txt", 100) == b"inside"
        assert safefs.read_bytes(fd, "./d//e/f.txt", 100) == b"inside"


@pytest.mark.parametrize("name", ["up/f.txt", "d/link.txt", "d/rel/f.txt"])
def test_links_anywhere_on_the_way_are_refused(mode, tree, name):
    with safefs.root(tree) as fd, pytest.raises(safefs.UnsafePath):
        safefs.read_bytes(fd, name, 100)


@pytest.mark.parametrize("name", ["../secret/f.txt", "d/../../secret/f.txt", "/etc/passwd", "a\x00b", "x" * 256])
def test_names_that_leave_or_cannot_exist_are_refused(mode, tree, name):
    with safefs.root(tree) as fd, pytest.raises(safefs.UnsafePath):
        safefs.read_bytes(fd, name, 100)


def test_special_files_and_size_budget(mode, tree):
    with safefs.root(tree) as fd:
        with pytest.raises(safefs.NotRegularFile, match="FIFO"):
            safefs.read_bytes(fd, "fifo", 100)  # O_NONBLOCK: returns at once instead of waiting for a writer
        with pytest.raises(safefs.NotRegularFile, match="directory"):
            safefs.read_bytes(fd, "d", 100)
        with pytest.raises(safefs.FileTooLarge):
            safefs.read_bytes(fd, "d/e/f.txt", 3)


def test_exclusive_create_never_writes_through_a_planted_link(mode, tree, tmp_path):
    target = tmp_path / "secret" / "new.txt"
    (tree / "out.txt").symlink_to(target)
    with safefs.root(tree) as fd:
        with pytest.raises(FileExistsError):
            safefs.create_exclusive(fd, "out.txt")
        with pytest.raises(safefs.UnsafePath):
            safefs.create_exclusive(fd, "up/new.txt", make_parents=True)
        os.close(safefs.create_exclusive(fd, "d/new/made.txt", make_parents=True))
    assert not target.exists() and (tree / "d" / "new" / "made.txt").is_file()


def test_walk_does_not_enter_links_and_unlink_stays_inside(mode, tree, tmp_path):
    with safefs.root(tree) as fd:
        seen = {e.rel for e in safefs.walk(fd)}
        assert seen == {"d", "d/e", "d/e/f.txt", "d/link.txt", "d/rel", "up", "fifo"}
        assert not safefs.unlink(fd, "up/f.txt") and safefs.unlink(fd, "up")
    assert (tmp_path / "secret" / "f.txt").read_text() == "outside"
