"""Load a trained student (base + LoRA adapter) and chat with it, prompted exactly as in training.

``load_student(dir)`` reads ``base_model_name_or_path`` from the adapter's ``adapter_config.json``,
loads that base with the right Auto class (VLM or text LM) and applies the adapter.
``generate_chat`` encodes the prompt with the same ``ChatCodec`` that encoded the training samples
(same chat template, same segment-wise tokenization, same image-to-text rendering for text
students), so a student is never served a prompt layout it was not trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mmat.errors import ConfigError, ModelUnavailableError
from mmat.finetune.data import ChatCodec, _Drop, conversation_to_row
from mmat.finetune.models import base_model_of, load_base

__all__ = ["load_student", "generate_chat", "ChatGeneration"]

_PROCESSING_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


class ChatGeneration(BaseModel):
    """One generated assistant turn and the token counts a provider reports as usage."""

    text: str = Field(description="The assistant's reply, special tokens and surrounding whitespace removed.")
    prompt_tokens: int = Field(description="Tokens in the encoded prompt (image tokens included).")
    completion_tokens: int = Field(description="Tokens generated, end-of-turn token included.")
    finish_reason: Literal["stop", "length"] = Field(description="stop: ended its turn; length: hit max_new_tokens.")

    def __str__(self) -> str:
        return self.text


def load_student(adapter_dir: str | Path, *, merge: bool = False) -> tuple[Any, Any]:
    """``(model, processor_or_tokenizer)`` for an adapter dir (or a plain model dir), in eval mode.

    ``merge=True`` folds the LoRA weights into the base (faster generation, no PEFT wrapper).
    """
    from peft import PeftModel

    path = Path(adapter_dir).expanduser()
    if not (path / "adapter_config.json").is_file():
        if (path / "config.json").is_file():
            model, processing, _ = load_base(str(path.resolve()))
            return model.eval(), processing
        raise ModelUnavailableError(f"{path} holds neither adapter_config.json nor config.json: pass the out dir of "
                                    "an mmat finetune run or a Hugging Face model directory.")
    base = base_model_of(path)
    try:
        model, processing, _ = load_base(base)
    except ModelUnavailableError as e:
        raise ModelUnavailableError(f"adapter {path} was trained on base {base!r}, which cannot be loaded here ({e}); "
                                    "copy the base model to this machine or fix base_model_name_or_path in "
                                    "adapter_config.json.") from None
    if any((path / f).is_file() for f in _PROCESSING_FILES):
        processing = _load_processing(path, type(processing))
    model = PeftModel.from_pretrained(model, str(path))
    if merge:
        model = model.merge_and_unload()
    return model.eval(), processing


def _load_processing(path: Path, like: type) -> Any:
    from transformers import AutoProcessor, AutoTokenizer, ProcessorMixin

    loader = AutoProcessor if issubclass(like, ProcessorMixin) else AutoTokenizer
    return loader.from_pretrained(str(path))


def _prompt_inputs(codec: ChatCodec, messages: list[dict[str, Any]], captions, base_dir) -> dict[str, Any]:
    import torch

    try:
        row = conversation_to_row(messages, vlm=codec.is_vlm, captions=captions, base_dir=base_dir)
    except _Drop as e:
        raise ConfigError(f"cannot build a prompt from these messages ({e.reason}): check images and content parts.") from None
    images = row.get("images", [])
    ids = codec.encode_prompt(row["messages"], images)
    inputs: dict[str, Any] = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if images:
        text = codec.render(row["messages"], add_generation_prompt=True)
        enc = codec.processing(text=[text], images=[images], add_special_tokens=False, return_tensors="pt")
        inputs.update({k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")})
    return inputs


def generate_chat(model, processing, messages: list[dict[str, Any]], max_new_tokens: int = 256, *,
                  temperature: float = 0.0, captions: Mapping[str, str] | None = None, base_dir: Path | None = None,
                  **generate_kwargs: Any) -> ChatGeneration:
    """Generate the next assistant turn for OpenAI-format ``messages``.

    Greedy by default (``temperature=0``); ``generate_kwargs`` go to ``model.generate`` (e.g. a
    ``logits_processor`` list for constrained decoding).
    """
    import torch

    codec = ChatCodec(processing)
    inputs = _prompt_inputs(codec, messages, captions, base_dir)
    inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    stops = codec.end_of_turn_ids()
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0,
                              "eos_token_id": stops, "pad_token_id": codec.tokenizer.pad_token_id}
    if temperature > 0:
        kwargs["temperature"] = temperature
    kwargs.update(generate_kwargs)
    with torch.inference_mode():
        out = model.generate(**inputs, **kwargs)
    n_prompt = inputs["input_ids"].shape[1]
    new = out[0, n_prompt:].tolist()
    finished = bool(new) and new[-1] in stops
    # strip: some templates (SmolVLM's "Assistant: ...") put a space before the reply that is not part of it
    text = codec.tokenizer.decode(new, skip_special_tokens=True).strip()
    return ChatGeneration(text=text, prompt_tokens=n_prompt, completion_tokens=len(new),
                          finish_reason="stop" if finished else "length")
