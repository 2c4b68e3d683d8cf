"""Find model weights that are already on this machine; never download.

Model-backed tool backends (OWLv2 detection, SAM segmentation, Whisper ASR, text-to-image) run only
when their weights exist locally: either a directory under ``MMAT_HOME/models/<alias>`` (what
``save_pretrained`` writes), or a complete snapshot in the Hugging Face cache (read with
``HF_HUB_OFFLINE=1`` semantics: the cache is looked up, the hub is never contacted).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmat.config import Settings

__all__ = ["LocalWeights", "find_weights", "weights_status", "WEIGHT_FILES"]

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "diffusion_pytorch_model*.safetensors", "model_index.json")


@dataclass(frozen=True)
class LocalWeights:
    """A loadable model directory and where it was found."""

    path: Path
    source: str  # "models dir" or "HF cache (<repo id>)"


def _has_weights(directory: Path) -> bool:
    if not (directory / "config.json").is_file() and not (directory / "model_index.json").is_file():
        return False
    return any(next(directory.rglob(pattern), None) is not None for pattern in WEIGHT_FILES)


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for marker in ("config.json", "model_index.json"):
        hit = try_to_load_from_cache(repo_id, marker)
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def find_weights(settings: Settings, alias: str, repo_ids: Sequence[str]) -> LocalWeights | None:
    """``MMAT_HOME/models/<alias>`` first, then the HF cache for each known repo id, in order."""
    own = settings.models_dir / alias
    if own.is_dir() and _has_weights(own):
        return LocalWeights(own, "models dir")
    for repo_id in repo_ids:
        snapshot = _hf_cache_snapshot(repo_id)
        if snapshot is not None and _has_weights(snapshot):
            return LocalWeights(snapshot, f"HF cache ({repo_id})")
    return None


def weights_status(settings: Settings, alias: str, repo_ids: Sequence[str], what: str) -> tuple[bool, str]:
    """``(available, reason)`` for a backend that needs ``what`` weights."""
    found = find_weights(settings, alias, repo_ids)
    if found is not None:
        return True, f"{what} weights in {found.source}: {found.path}"
    options = " or ".join(repo_ids)
    return False, (
        f"no local {what} weights: save a model (e.g. {options}) with save_pretrained() into "
        f"{settings.models_dir / alias}, or have it in the Hugging Face cache"
    )
