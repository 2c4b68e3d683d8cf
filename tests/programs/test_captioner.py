"""ImageCaptioner: captions user images with a multimodal model, refuses text-only ones."""

import pytest
from PIL import Image

from mmat.errors import ConfigError
from mmat.pool import ImagePool
from mmat.programs import ImageCaptioner
from mmat.testing import DummyLM


def test_captions_a_folder_through_the_pool(settings, tmp_path, use_lm):
    Image.new("RGB", (16, 16), "green").save(tmp_path / "leaf.png")
    dm = DummyLM([{"caption": "A plain green square."}], name="captioner")
    with use_lm("dummy/captioner") as lm:
        fn = ImageCaptioner.caption_fn(lm, multimodal=True)
        [image] = ImagePool().add_folder(tmp_path, caption_fn=fn)
    assert image.caption == "A plain green square."
    parts = dm.calls[0].messages[-1]["content"]
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts)


def test_text_only_model_is_refused(settings, tmp_path, use_lm):
    Image.new("RGB", (16, 16), "green").save(tmp_path / "leaf.png")
    DummyLM([{"caption": "never used"}], name="textonly")
    with use_lm("dummy/textonly"), pytest.raises(ConfigError, match="dummy/textonly cannot see images"):
        ImageCaptioner()(tmp_path / "leaf.png")
