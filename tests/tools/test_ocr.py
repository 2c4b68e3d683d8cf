"""ocr on text rendered in the test: the words come back, with boxes where the text is."""

from __future__ import annotations

import re

from PIL import Image

from .helpers import render_text


def test_ocr_reads_rendered_text_with_boxes(make_host, text_image):
    out = make_host().call("ocr", {"image_path": "note.png"})
    assert out.startswith("2 text line(s) in 'note.png'")
    lines = out.splitlines()[1:]
    assert "Invoice total 42.50 EUR" in lines[0] and "Meeting room B12 at noon" in lines[1]
    x1, y1, x2, y2 = map(int, re.match(r"\[(\d+), (\d+), (\d+), (\d+)\]", lines[0]).groups())
    assert 0 <= x1 < 60 and 0 <= y1 < 40 and 300 < x2 < 720 and y1 < y2 < 80  # first line sits top-left


def test_ocr_keeps_reading_order_for_side_by_side_text(make_host, workspace):
    img = Image.new("RGB", (900, 120), "white")
    left, right = render_text(["Apples"], (300, 80)), render_text(["Oranges"], (300, 80))
    img.paste(left, (0, 20))
    img.paste(right, (500, 24))
    img.save(workspace / "row.png")
    out = make_host().call("ocr", {"image_path": "/workspace/row.png"})
    assert out.index("Apples") < out.index("Oranges")


def test_ocr_on_a_blank_image(make_host, workspace):
    Image.new("RGB", (300, 200), "white").save(workspace / "blank.png")
    assert make_host().call("ocr", {"image_path": "blank.png"}) == "No text found in 'blank.png'."
