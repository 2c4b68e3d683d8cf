"""facedetection on real photos from scikit-image (no downloads)."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

# The astronaut's face in skimage.data.astronaut() (512x512), measured by eye: forehead to chin, ear to ear.
ASTRONAUT_FACE = (165, 55, 285, 175)


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_one_face_found_where_the_astronaut_face_is(make_host, astronaut):
    out = make_host().call("facedetection", {"image_path": "astronaut.png"})
    assert out.startswith("1 face(s) in 'astronaut.png' (512x512)")
    box = tuple(map(int, re.search(r"face 1: \[(\d+), (\d+), (\d+), (\d+)\]", out).groups()))
    assert _iou(box, ASTRONAUT_FACE) > 0.5


def test_boxes_scale_back_from_large_images(make_host, workspace):
    from skimage import data

    big = Image.fromarray(data.astronaut()).resize((1536, 1536))  # detection runs on a 1024 px copy
    big.save(workspace / "big.jpg")
    out = make_host().call("facedetection", {"image_path": "big.jpg"})
    box = tuple(map(int, re.search(r"face 1: \[(\d+), (\d+), (\d+), (\d+)\]", out).groups()))
    assert _iou(box, tuple(3 * v for v in ASTRONAUT_FACE)) > 0.5


def test_no_faces_in_a_photo_without_people(make_host, workspace):
    from skimage import data

    Image.fromarray(data.coffee()).save(workspace / "coffee.png")
    assert make_host().call("facedetection", {"image_path": "coffee.png"}) == "No faces found in 'coffee.png' (600x400)."
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(workspace / "black.png")
    assert make_host().call("facedetection", {"image_path": "black.png"}).startswith("No faces found")
