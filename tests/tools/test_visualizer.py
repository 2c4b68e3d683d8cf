"""visualizer: a real VQA model when configured; offline, answers derived from local tools and labelled."""

from __future__ import annotations

import pytest

from mmat.tools import DERIVED_LABEL, ToolArgumentError


def test_without_any_model_the_gathered_facts_come_back_labelled(make_host, astronaut):
    out = make_host().call("visualizer", {"question": "Who is in the picture?", "image_path": "astronaut.png"})
    assert out.startswith(f"{DERIVED_LABEL} No model can look at 'astronaut.png' here; facts the local tools found:")
    assert "- size: 512x512 pixels" in out
    assert "- frontal faces detected: 1 at [" in out
    assert "- dominant colors: " in out


def test_text_model_answers_from_ocr_and_the_pool_caption(make_host, scripted_lm, text_image):
    dummy, lm = scripted_lm([{"answer": "The invoice total is 42.50 EUR."}])
    seen = []

    def caption_lookup(path):
        seen.append(path)
        return "A printed note with two lines of text."

    host = make_host(lm=lm, caption_lookup=caption_lookup)
    out = host.call("visualizer", {"question": "What is the invoice total?", "image_path": "note.png"})
    assert out == f"{DERIVED_LABEL} The invoice total is 42.50 EUR."
    assert seen == [text_image.resolve()]
    sent = str(dummy.calls[0].messages)
    assert "Invoice total 42.50 EUR" in sent  # OCR text reached the model
    assert "caption: A printed note with two lines of text." in sent
    assert "What is the invoice total?" in sent


def test_vqa_model_sees_the_image(make_host, scripted_lm, astronaut):
    dummy, _ = scripted_lm([{"answer": "An astronaut in an orange suit."}], name="tools-vqa")
    host = make_host(vqa_model="dummy/tools-vqa")
    assert [r.backend for r in host.status() if r.tool == "visualizer" and r.active] == ["vqa-model"]
    out = host.call("visualizer", {"question": "Describe the image.", "image_path": "astronaut.png"})
    assert out == "An astronaut in an orange suit."  # a real visual answer carries no label
    parts = [p for m in dummy.calls[0].messages if isinstance(m.get("content"), list) for p in m["content"]]
    images = [p for p in parts if p.get("type") == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_empty_question_and_bad_image(make_host, workspace):
    (workspace / "x.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")
    host = make_host()
    with pytest.raises(ToolArgumentError, match="the question is empty"):
        host.call("visualizer", {"question": " ", "image_path": "x.jpg"})
    with pytest.raises(ToolArgumentError, match="visualizer: cannot open image 'x.jpg'"):
        host.call("visualizer", {"question": "What is it?", "image_path": "x.jpg"})
