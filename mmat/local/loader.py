"""Load local models once per process: embedded GGUF -> cached safetensors copy, HF dirs, LoRA adapters.

Weights are big and CPU generation is serial, so every ``local/...`` model is a lazy, thread-safe
singleton (``get_loaded``), and each carries a lock that ``generate`` holds. Fine-tuning must not
train the shared copy: it asks for ``fresh=True`` (or for the converted directory itself,
``local_weights_dir``) instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.config import Settings, load_settings
from mmat.errors import ModelUnavailableError
from mmat.ids import sha256_file
from mmat.local.registry import CONVERTED_MARKER, LocalModelSpec, is_converted, resolve_local

__all__ = ["LoadedModel", "get_loaded", "load_local_model", "local_weights_dir", "convert_embedded", "unload_all"]

log = logging.getLogger(__name__)

# Errors transformers/safetensors raise for unreadable weights (a truncated copy, a wrong file).
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError)


@dataclass
class LoadedModel:
    """One model in memory. ``processor`` is set for vision models (it wraps ``tokenizer``)."""

    spec: LocalModelSpec
    model: Any
    tokenizer: Any
    processor: Any = None
    load_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    grammars: dict[str, Any] = field(default_factory=dict, repr=False)  # schema hash -> compiled grammar
    grammar_compiler: Any = field(default=None, repr=False)

    @property
    def vision(self) -> bool:
        return self.processor is not None


_LOADED: dict[str, LoadedModel] = {}
_KEY_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def convert_embedded(spec: LocalModelSpec) -> Path:
    """Dequantize the embedded GGUF into ``spec.model_dir`` (atomically: tmp dir, then rename)."""
    if spec.kind != "embedded" or spec.model_dir is None or spec.gguf_path is None or spec.embedded is None:
        raise ValueError(f"convert_embedded needs an embedded model spec, got kind={spec.kind}")
    target = spec.model_dir
    if is_converted(target):
        return target
    digest = sha256_file(spec.gguf_path)
    if digest != spec.embedded.sha256:
        raise ModelUnavailableError(
            f"the GGUF file of local/{spec.name} is corrupt (sha256 {digest[:12]}... != {spec.embedded.sha256[:12]}...): "
            f"run `{spec.embedded.install_hint}`"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    log.warning("first use of local/%s: converting %s to %s (about a minute, once)", spec.name, spec.gguf_path.name, target)
    try:
        gguf_dir, gguf_file = str(spec.gguf_path.parent), spec.gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": str(spec.gguf_path), "sha256": digest, "seconds": round(time.perf_counter() - started, 1)}
        (tmp / CONVERTED_MARKER).write_text(json.dumps(marker, indent=2))
        if target.exists():  # a stale, unmarked copy from an interrupted run of ours
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_converted(target):  # not another process winning the race: a real failure
                raise
    except _LOAD_ERRORS as e:
        raise ModelUnavailableError(
            f"converting local/{spec.name} failed ({type(e).__name__}: {e}); check free disk space under "
            f"{target.parent} or run `{spec.embedded.install_hint}`"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_weights_dir(name: str, settings: Settings | None = None) -> Path:
    """A Hugging Face directory holding the weights of ``local/name`` (converting an embedded model first).

    Fine-tuning uses this as the base of a text student: ``base_model_name_or_path`` can point here.
    """
    spec = resolve_local(name, settings or load_settings())
    if spec.kind == "embedded":
        return convert_embedded(spec)
    if spec.kind == "hf_dir" and spec.model_dir is not None:
        return spec.model_dir
    raise ModelUnavailableError(f"local/{spec.name} is a LoRA adapter, not a full model: use its base or merge it")


def _is_vision_dir(path: Path | str) -> bool:
    config = Path(path) / "config.json"
    if config.is_file():
        return "vision_config" in json.loads(config.read_text())
    from transformers import AutoConfig

    return hasattr(AutoConfig.from_pretrained(str(path)), "vision_config")


def _load_dir(path: Path | str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, processor-or-None) from a model dir or a hub id in the local cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if _device() == "cpu" else torch.bfloat16
    if _is_vision_dir(path):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(str(path))
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype)
        return model, processor.tokenizer, processor
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, tokenizer, None


def _load_spec(spec: LocalModelSpec) -> tuple[Any, Any, Any]:
    if spec.kind == "embedded":
        path = convert_embedded(spec)
        try:
            return _load_dir(path)
        except _LOAD_ERRORS as e:
            # A damaged cached copy is ours to repair: drop it and convert again, once.
            log.warning("cached copy of local/%s at %s is unreadable (%s); converting again", spec.name, path, e)
            shutil.rmtree(path, ignore_errors=True)
            return _load_dir(convert_embedded(spec))
    if spec.kind == "hf_dir":
        try:
            return _load_dir(spec.model_dir)
        except _LOAD_ERRORS as e:
            raise ModelUnavailableError(f"cannot load local model {spec.model_dir}: {type(e).__name__}: {e}") from e
    return _load_adapter(spec)


def _load_adapter(spec: LocalModelSpec) -> tuple[Any, Any, Any]:
    from peft import PeftModel

    if spec.base is not None:
        # Always a fresh base: peft injects LoRA layers into the modules it wraps, so sharing the
        # base singleton would silently change what local/<base> answers.
        model, tokenizer, processor = _load_spec(spec.base)
    else:
        try:
            model, tokenizer, processor = _load_dir(spec.base_ref)
        except _LOAD_ERRORS as e:
            raise ModelUnavailableError(
                f"adapter {spec.adapter_dir} needs base model {spec.base_ref!r}, which is neither a local dir nor in "
                f"the Hugging Face cache (mmat runs offline): set base_model_name_or_path to a local dir"
            ) from e
    try:
        model = PeftModel.from_pretrained(model, str(spec.adapter_dir)).merge_and_unload()
    except _LOAD_ERRORS as e:
        raise ModelUnavailableError(f"cannot apply adapter {spec.adapter_dir}: {type(e).__name__}: {e}") from e
    return model, tokenizer, processor


def _load(spec: LocalModelSpec) -> LoadedModel:
    started = time.perf_counter()
    model, tokenizer, processor = _load_spec(spec)
    model.to(_device())
    model.eval()
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, processor=processor, load_seconds=time.perf_counter() - started)


def get_loaded(spec: LocalModelSpec) -> LoadedModel:
    """The process-wide instance for ``spec`` (loaded on first use; concurrent first uses load once)."""
    loaded = _LOADED.get(spec.key)
    if loaded is not None:
        return loaded
    with _REGISTRY_LOCK:
        key_lock = _KEY_LOCKS.setdefault(spec.key, threading.Lock())
    with key_lock:
        loaded = _LOADED.get(spec.key)
        if loaded is None:
            loaded = _load(spec)
            _LOADED[spec.key] = loaded
    return loaded


def load_local_model(name: str, settings: Settings | None = None, *, fresh: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``local/name`` (``(model, processor)`` for a vision model).

    ``fresh=False`` returns the shared inference instance (do not train it); ``fresh=True`` loads an
    unshared copy, e.g. the converted SmolLM2 as a text student for fine-tuning.
    """
    spec = resolve_local(name, settings or load_settings())
    loaded = _load(spec) if fresh else get_loaded(spec)
    return loaded.model, loaded.processor or loaded.tokenizer


def unload_all() -> None:
    """Forget every loaded model (tests; freeing memory between phases of a long job)."""
    with _REGISTRY_LOCK:
        _LOADED.clear()
        _KEY_LOCKS.clear()
