"""image_edit: the text model's typed op list (scripted) is applied by PIL, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmat.signatures.tools import EDIT_OP_NAMES
from mmat.tools import ToolArgumentError, ToolError, ToolUnavailableError
from mmat.tools.edit import _APPLY


@pytest.fixture
def photo(workspace):
    """Left half red, right half blue, 200x100."""
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100] = (220, 20, 20)
    arr[:, 100:] = (20, 20, 220)
    Image.fromarray(arr).save(workspace / "photo.png")
    return workspace / "photo.png"


def _edit(make_host, scripted_lm, ops, prompt="do it"):
    dummy, lm = scripted_lm([{"ops": ops}] * 2)  # a second answer for DSPy's JSON retry after a parse failure
    out = make_host(lm=lm).call("image_edit", {"prompt": prompt, "image_path": "photo.png"})
    return dummy, out


def test_every_op_name_has_an_implementation():
    assert set(EDIT_OP_NAMES) == set(_APPLY)


def test_crop_then_flip_is_applied_in_order(make_host, scripted_lm, workspace, photo):
    ops = [{"op": "crop", "box": [50, 0, 150, 100]}, {"op": "flip", "direction": "horizontal"}]
    dummy, out = _edit(make_host, scripted_lm, ops, "keep the middle and mirror it")
    assert out == (
        "Saved edited image to edited_1.png (100x100). "
        "Applied: crop(box=[50, 0, 150, 100]); flip(direction='horizontal')."
    )
    edited = np.asarray(Image.open(workspace / "edited_1.png"))
    assert tuple(edited[50, 10]) == (20, 20, 220) and tuple(edited[50, 90]) == (220, 20, 20)  # blue now on the left
    assert Image.open(photo).size == (200, 100)  # the original is kept
    request = dummy.calls[0]
    assert "keep the middle and mirror it" in str(request.messages) and "200x100 pixels" in str(request.messages)


def test_region_blur_grayscale_and_drawing(make_host, scripted_lm, workspace, photo):
    ops = [
        {"op": "draw_box", "box": [10, 10, 60, 60], "color": "green", "width": 4, "label": None},
        {"op": "draw_text", "text": "hi", "position": [120, 40], "color": "white", "size": 20},
        {"op": "blur", "radius": 8, "box": [90, 0, 110, 100]},
        {"op": "grayscale"},
    ]
    _, out = _edit(make_host, scripted_lm, ops)
    edited = np.asarray(Image.open(workspace / "edited_1.png")).astype(int)
    assert edited.shape == (100, 200, 3)
    assert (edited[..., 0] == edited[..., 1]).all() and (edited[..., 1] == edited[..., 2]).all()  # gray
    left, right, seam = edited[50, 30, 0], edited[50, 170, 0], edited[50, 100, 0]
    assert min(left, right) < seam < max(left, right) or abs(seam - (left + right) / 2) < 40  # blurred edge
    assert edited[12, 30, 0] != edited[30, 30, 0]  # the box outline
    assert "draw_box(box=[10, 10, 60, 60], color='green', width=4)" in out


def test_rotate_resize_and_stylize_change_the_image(make_host, scripted_lm, workspace, photo):
    ops = [{"op": "rotate", "degrees": 90}, {"op": "resize", "width": 50, "height": 80}, {"op": "stylize", "style": "invert"}]
    _, out = _edit(make_host, scripted_lm, ops)
    edited = np.asarray(Image.open(workspace / "edited_1.png"))
    assert edited.shape == (80, 50, 3)
    assert tuple(edited[5, 25]) == (235, 235, 35)  # rotated CCW: blue half on top, then inverted


def test_boxes_outside_the_image_are_the_models_error(make_host, scripted_lm, photo):
    with pytest.raises(ToolArgumentError, match="does not overlap the 200x100 image"):
        _edit(make_host, scripted_lm, [{"op": "crop", "box": [300, 300, 400, 400]}])


def test_unusable_plan_becomes_a_tool_error(make_host, scripted_lm, photo):
    with pytest.raises(ToolError, match="answered in a shape that could not be used"):
        _edit(make_host, scripted_lm, [{"op": "teleport", "where": "moon"}])


def test_outputs_count_up(make_host, scripted_lm, workspace, photo):
    dummy, lm = scripted_lm([{"ops": [{"op": "grayscale"}]}, {"ops": [{"op": "flip", "direction": "vertical"}]}])
    host = make_host(lm=lm)
    assert host.call("image_edit", {"prompt": "gray", "image_path": "photo.png"}).startswith("Saved edited image to edited_1.png")
    assert host.call("image_edit", {"prompt": "flip", "image_path": "edited_1.png"}).startswith("Saved edited image to edited_2.png")


def test_without_a_text_model_image_edit_is_unavailable(make_host, photo):
    host = make_host(names=["image_edit"])
    with pytest.raises(ToolUnavailableError, match="needs a text model"):
        host.call("image_edit", {"prompt": "rotate 90 degrees", "image_path": "photo.png"})
