"""Paths from the model map into the workspace and nowhere else; bad files give errors the model can act on."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from mmat.errors import ConfigError
from mmat.tools import ToolArgumentError, ToolContext, WorkspaceToolHost


@pytest.fixture
def ctx(settings, workspace) -> ToolContext:
    return ToolContext(settings, workspace)


def test_relative_and_sandbox_paths_map_to_the_workspace(ctx, workspace):
    (workspace / "sub").mkdir()
    target = workspace / "sub" / "a.txt"
    target.write_text("x")
    for arg in ["sub/a.txt", "./sub/a.txt", "/workspace/sub/a.txt", "sub/../sub/a.txt", str(target)]:
        f = ctx.read_file("t", arg)
        assert (f.name, f.data) == ("sub/a.txt", b"x"), arg


@pytest.mark.parametrize("arg", ["../secret.txt", "/etc/passwd", "/workspace/../etc/passwd", "sub/../../secret.txt"])
def test_paths_outside_the_workspace_are_rejected(ctx, workspace, arg):
    (workspace.parent / "secret.txt").write_text("not yours")
    with pytest.raises(ToolArgumentError, match="is outside the workspace"):
        ctx.read_file("ocr", arg)


def test_symlink_out_of_the_workspace_is_rejected(ctx, workspace):
    outside = workspace.parent / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    (workspace / "link.png").symlink_to(outside)
    with pytest.raises(ToolArgumentError, match="outside the workspace"):
        ctx.open_image("ocr", "link.png")


def test_missing_file_names_what_is_there(ctx, workspace):
    (workspace / "photo.jpg").write_bytes(b"x")
    with pytest.raises(ToolArgumentError) as err:
        ctx.read_file("ocr", "nope.png", what="image")
    assert str(err.value) == (
        "ocr: cannot open image 'nope.png': file not found in the workspace. Files in the workspace: photo.jpg."
    )


def test_directory_and_empty_path_are_rejected(ctx, workspace):
    (workspace / "d").mkdir()
    with pytest.raises(ToolArgumentError, match="is a directory"):
        ctx.read_file("ocr", "d")
    with pytest.raises(ToolArgumentError, match="the file path is empty"):
        ctx.read_file("ocr", "  ")


def test_corrupt_and_truncated_images_give_clear_errors(ctx, workspace):
    (workspace / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ToolArgumentError, match="ocr: cannot open image 'bad.png': it is not an image file"):
        ctx.open_image("ocr", "bad.png")
    Image.new("RGB", (200, 200), "red").save(workspace / "whole.png")
    data = (workspace / "whole.png").read_bytes()
    (workspace / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ToolArgumentError, match="cannot open image 'cut.png'"):
        ctx.open_image("facedetection", "cut.png")
    (workspace / "empty.png").write_bytes(b"")
    with pytest.raises(ToolArgumentError, match="cannot open image 'empty.png'"):
        ctx.open_image("ocr", "empty.png")


def test_images_are_decoded_as_rgb(ctx, workspace):
    Image.new("RGBA", (10, 6), (255, 0, 0, 128)).save(workspace / "a.png")
    img, name = ctx.open_image("ocr", "a.png")
    assert img.mode == "RGB" and img.size == (10, 6) and name == "a.png"


def test_output_paths_count_up_and_never_collide(ctx, workspace):
    (workspace / "edited_7.png").write_bytes(b"")
    with ctx.new_output("edited") as (name, f):
        f.write(b"png")
    assert name == "edited_8.png" and (workspace / name).read_bytes() == b"png"
    names: list[str] = []

    def reserve() -> None:
        with ctx.new_output("mask") as (name, _):
            names.append(name)

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 16 and all((workspace / n).exists() for n in names)


def test_host_calls_through_the_same_rules(make_host, workspace):
    host = make_host()
    with pytest.raises(ToolArgumentError, match="outside the workspace"):
        host.call("ocr", {"image_path": "/etc/hostname"})
    with pytest.raises(ConfigError, match="is not a directory"):
        WorkspaceToolHost(host.context.settings, workspace / "missing")


def test_a_failed_output_is_removed_and_a_planted_name_is_skipped(ctx, workspace):
    outside = workspace.parent / "outside.png"
    (workspace / "mask_1.png").symlink_to(outside)  # planted: creating mask_1 must not write through it
    with pytest.raises(RuntimeError):
        with ctx.new_output("mask") as (name, f):
            f.write(b"half")
            raise RuntimeError("drawing failed")
    assert name == "mask_2.png" and not (workspace / "mask_2.png").exists() and not outside.exists()


@pytest.mark.parametrize("arg", ["a\x00b.png", "x" * 300 + ".png", "d/" * 2100 + "x.png", "\ud800.png"])
def test_unusable_names_are_tool_errors(ctx, arg):
    with pytest.raises(ToolArgumentError, match="ocr: "):
        ctx.read_file("ocr", arg)


def test_special_files_are_refused_without_blocking(ctx, workspace):
    import os

    os.mkfifo(workspace / "pipe.png")
    with pytest.raises(ToolArgumentError, match="is a FIFO"):
        ctx.read_file("ocr", "pipe.png")
