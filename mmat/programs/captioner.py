"""ImageCaptioner: captions for a user's image folder from a multimodal teacher (CaptionImage).

``ImagePool.add_folder(dir, caption_fn=ImageCaptioner.caption_fn(lm))`` captions every image the
folder's captions file does not cover. A text-only model cannot do this, so it is refused up front.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy

from mmat.errors import ConfigError
from mmat.programs._calls import active_lm, call_predictor, clean_optional, lm_is_multimodal, mark
from mmat.signatures.files import CaptionImage

__all__ = ["ImageCaptioner"]


class ImageCaptioner(dspy.Module):
    """Image file -> one or two sentence caption."""

    _mmat_name = "image_captioner"

    def __init__(self, *, multimodal: bool | None = None):
        super().__init__()
        self.multimodal = multimodal
        self.caption = mark(dspy.Predict(CaptionImage), "image_captioner.caption")

    def forward(self, path: Path) -> str:
        lm = active_lm(self.caption)
        if not (self.multimodal if self.multimodal is not None else lm_is_multimodal(lm)):
            model = getattr(lm, "model", lm)
            raise ConfigError(
                f"{model} cannot see images (litellm supports_vision is false): caption with a vision model, "
                "or write a captions.json/captions.csv for the folder"
            )
        pred = call_predictor(self.caption, "image captioning", image=dspy.Image.from_path(str(path)))
        return clean_optional(pred.caption) or ""

    @classmethod
    def caption_fn(cls, lm: Any, **kwargs: Any) -> Callable[[Path], str]:
        """A ``caption_fn`` for :meth:`mmat.pool.ImagePool.add_folder` that runs on ``lm``."""
        captioner = cls(**kwargs)

        def caption(path: Path) -> str:
            with dspy.context(lm=lm):
                return captioner(path)

        return caption
