"""Images to a text-only model become text descriptions, counted; bad images never crash."""

import base64
import io

from PIL import Image, PngImagePlugin

from mmat.local.messages import flatten_messages, image_to_text


def _data_url(image: Image.Image, fmt: str = "PNG", pnginfo=None) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, pnginfo=pnginfo)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _part(url: str, **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": url}, **extra}


def test_data_url_image_is_described_by_size_mode_and_colours():
    image = Image.new("RGB", (8, 6), (230, 20, 20))
    image.paste((250, 250, 250), (0, 0, 8, 2))  # top third white
    assert image_to_text(_part(_data_url(image))) == "[image: 8x6, RGB, colors: red 67%, white 33%]"


def test_caption_from_the_part_from_a_mapping_and_from_png_metadata(tmp_path):
    image = Image.new("L", (4, 4), 0)
    path = tmp_path / "a.png"
    image.save(path)
    assert image_to_text(_part(str(path), caption="a black square")) == "[image: 4x4, L, colors: black 100%; caption: a black square]"
    assert image_to_text(_part(f"file://{path}"), captions={f"file://{path}": "dark"}).endswith("; caption: dark]")
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "a tiny test card")
    assert "caption: a tiny test card" in image_to_text(_part(_data_url(image, pnginfo=info)))


def test_bad_images_give_a_text_marker_instead_of_an_exception(tmp_path):
    assert image_to_text(_part("data:image/png;base64,bm90IGFuIGltYWdl")).startswith("[image: unreadable (")
    assert image_to_text(_part(str(tmp_path / "missing.png"))).startswith("[image: unreadable (")
    assert "not fetched" in image_to_text(_part("https://example.invalid/cat.png"))
    assert image_to_text({"type": "image_url"}) == "[image: unreadable (image part has no url)]"
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nthen nothing useful")
    assert image_to_text(_part(str(garbage))).startswith("[image: unreadable (")


def test_flatten_counts_downgrades_and_keeps_text_order():
    url = _data_url(Image.new("RGB", (2, 2), (0, 0, 0)))
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look: "}, _part(url), {"type": "text", "text": " and "}, _part(url)]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "ocr", "arguments": "{}"}}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
    ]
    flat = flatten_messages(messages)
    assert flat.image_downgrades == 2
    assert flat.messages[0] == {"role": "system", "content": "be brief"}
    assert flat.messages[1]["content"] == "look: [image: 2x2, RGB, colors: black 100%] and [image: 2x2, RGB, colors: black 100%]"
    assert '"name": "ocr"' in flat.messages[2]["content"]
    assert flat.messages[3]["content"] == "[input_audio content omitted: the local model reads text only]"


def test_flatten_without_images_counts_zero():
    flat = flatten_messages([{"role": "user", "content": "hi"}])
    assert flat.image_downgrades == 0 and flat.messages == [{"role": "user", "content": "hi"}]
