"""Sentence-embedding similarity for GTA's subjective answers (and image-generation arguments).

GTA scores a subjective answer by the largest cosine similarity between its sentence embedding and a
reference's, clipped at 0, with ``all-mpnet-base-v2``. mmat uses that model when its weights are already in
the local Hugging Face cache (mmat never downloads at run time); otherwise the shipped all-MiniLM-L6-v2,
and the run records which one scored, because the two give different figures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["SimilarityModel", "load_similarity", "OFFICIAL_MODEL", "find_official_model"]

OFFICIAL_MODEL = "all-mpnet-base-v2"
_OFFICIAL_REPO = "sentence-transformers/all-mpnet-base-v2"
FALLBACK_MODEL = "all-MiniLM-L6-v2"

Embed = Callable[[Sequence[str]], np.ndarray]


class SimilarityModel:
    """``score(answer, references)`` = max cosine similarity clipped at 0; ``name`` says which model scored."""

    def __init__(self, name: str, embed: Embed, *, official: bool):
        self.name = name
        self.official = official
        self._embed = embed
        self._lock = threading.Lock()

    def __call__(self, answer: str, references: Sequence[str]) -> float:
        if not references:
            return 0.0
        with self._lock:
            vectors = np.asarray(self._embed([answer, *references]), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        unit = vectors / norms[:, None]
        best = float(np.max(unit[1:] @ unit[0]))
        return max(0.0, min(1.0, best))

    @property
    def label(self) -> str:
        return self.name if self.official else f"{self.name} (GTA uses {OFFICIAL_MODEL}: a different figure)"


def find_official_model() -> Path | None:
    """The local snapshot of all-mpnet-base-v2 in the Hugging Face cache, or None (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(_OFFICIAL_REPO, filename)
        if isinstance(found, str):
            folder = Path(found).parent
            if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
                return folder
    return None


def load_similarity(model_dir: Path | None = None) -> SimilarityModel:
    """all-mpnet-base-v2 from ``model_dir`` or the local HF cache when present, else the shipped MiniLM."""
    from mmat.embed import Embedder

    official = model_dir if model_dir is not None else find_official_model()
    if official is not None:
        # all-mpnet-base-v2 is mean pooling + L2 normalisation, as Embedder computes
        return SimilarityModel(OFFICIAL_MODEL, Embedder(official, verify=False).embed, official=True)
    return SimilarityModel(FALLBACK_MODEL, Embedder.shared().embed, official=False)
