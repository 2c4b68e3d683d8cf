"""Conversations (OpenAI chat format, exactly as the agent saw them) -> training rows and samples.

Two shapes come out of here:

- **TRL rows** (``conversation_to_row``): ``{"messages": [...], "images": [PIL...]}`` for VLMs, with
  ``{"type": "image"}`` placeholders where the images were, in order; ``{"messages": [...]}`` with
  string contents for text students, each image rendered to text by the local provider's own
  ``mmat.local.flatten_messages`` — so train and serve see identical prompts.
- **Encoded samples** (``encode_rows``): token ids plus labels that supervise exactly the assistant
  turns (their text and their end-of-turn token), nothing from system, user or observation turns.

How the mask is built, and why this way: the chat template renders the conversation to text; for
each assistant turn ``i`` we render the prefix ``messages[:i]`` with the generation prompt and the
prefix ``messages[:i+1]``; the characters between the two are that turn's completion (minus trailing
whitespace after its end token). The text is cut into alternating prompt / completion segments and
each segment is tokenized on its own — which is how the model meets them at inference: the prompt
is tokenized, then the completion is *generated* token by token, never merged with the prompt's
last characters. It works for any prefix-stable template without per-model ``{% generation %}``
markers; a template that rewrites earlier turns (not prefix-stable) drops the sample with a reason.

Length: ``max_length`` is explicit. A sample that is too long loses whole trailing turns (it then ends
on the last assistant turn that fits) or is dropped; truncation never cuts inside a turn. Every drop
and trim is counted in a ``SelectionReport``.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, Field

from mmat.errors import ConfigError

__all__ = [
    "IGNORE_INDEX",
    "Overflow",
    "SelectionReport",
    "SelectionMeta",
    "EncodedSample",
    "ChatCodec",
    "load_image",
    "text_messages",
    "as_messages",
    "conversation_to_row",
    "pair_to_row",
    "encode_rows",
]

IGNORE_INDEX = -100  # label value the loss ignores (PyTorch cross-entropy default)
Overflow = Literal["drop_turns", "drop_sample"]


class SelectionReport(BaseModel):
    """What became of the rows handed to training: kept, trimmed, dropped (and why)."""

    n_rows: int = Field(description="Rows (conversations or preference pairs) handed in.")
    n_samples: int = Field(description="Training samples kept.")
    n_dropped: int = Field(description="Rows dropped entirely; see reasons.")
    reasons: dict[str, int] = Field(default_factory=dict, description="Drop reason -> number of rows dropped for it.")
    n_trimmed: int = Field(0, description="Kept samples that lost trailing turns to fit max_length.")
    turns_dropped: int = Field(0, description="Assistant turns removed by trimming, over all trimmed samples.")
    n_tokens: int = Field(0, description="Tokens in the kept samples (one pass, no padding).")
    n_supervised_tokens: int = Field(0, description="Of those, tokens that carry loss (assistant turns).")

    def summary(self) -> str:
        why = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        return (f"{self.n_samples}/{self.n_rows} samples kept, {self.n_dropped} dropped ({why}), "
                f"{self.n_trimmed} trimmed ({self.turns_dropped} turns)")


class SelectionMeta(BaseModel):
    """Where the training rows came from, saved next to the adapter (provenance, reruns)."""

    sql: str | None = Field(None, description="The SQL that selected the rows from the store.")
    n_rows: int | None = Field(None, description="Rows that SQL returned.")
    run_ids: list[str] = Field(default_factory=list, description="Store runs the rows came from.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Anything else the caller wants on record.")


class _Drop(Exception):
    """A row cannot become a training sample; ``reason`` is counted in the SelectionReport."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- images ----------------------------------------------------------------------------------

def load_image(ref: str, base_dir: Path | None = None):
    """A PIL RGB image from a data URL, a ``file://`` URL or a path (relative paths under ``base_dir``)."""
    from PIL import Image

    try:
        if ref.startswith("data:"):
            header, _, payload = ref.partition(",")
            raw = base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode("latin-1")
            img = Image.open(io.BytesIO(raw))
        else:
            path = Path(unquote(urlparse(ref).path)) if ref.startswith("file://") else Path(ref)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            img = Image.open(path)
        img.load()
    except (OSError, ValueError, binascii.Error) as e:
        raise ConfigError(f"cannot read image {ref[:80]!r}: {e}; fix the path/data URL in the conversation.") from None
    return img.convert("RGB")


def _image_ref(part: dict[str, Any]) -> str:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str) or not url:
        raise _Drop("image_part_without_url")
    return url


def text_messages(messages: list[dict[str, Any]], captions: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Messages for a text-only student: exactly what the local provider feeds it at inference.

    Delegates to ``mmat.local.flatten_messages`` (images -> ``[image: WxH, mode, colors...]`` text,
    parts joined, ``developer`` -> ``system``), so train and serve cannot drift apart.
    """
    from mmat.local.messages import flatten_messages

    return flatten_messages(messages, captions).messages


# --- conversations -> TRL rows ---------------------------------------------------------------

def as_messages(conversation: Any) -> list[dict[str, Any]]:
    """Accept a message list, ``{"messages": [...]}`` or an object with ``.messages`` (store exports)."""
    if isinstance(conversation, dict) and "messages" in conversation:
        conversation = conversation["messages"]
    elif hasattr(conversation, "messages"):
        conversation = conversation.messages
    if not isinstance(conversation, list) or not all(isinstance(m, dict) and "role" in m for m in conversation):
        raise ConfigError("a conversation must be a list of {'role', 'content'} messages (OpenAI chat format).")
    return conversation


def _structured(content: Any, base_dir: Path | None, images: list) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            try:
                images.append(load_image(_image_ref(part), base_dir))
            except ConfigError:
                raise _Drop("image_unreadable") from None
            parts.append({"type": "image"})
        else:
            raise _Drop(f"unknown_content_part:{kind}")
    return parts


def conversation_to_row(conversation: Any, *, vlm: bool, captions: Mapping[str, str] | None = None,
                        base_dir: Path | None = None) -> dict[str, Any]:
    """One conversation -> one TRL row (see module docstring). Raises ``_Drop`` for unusable rows."""
    messages = as_messages(conversation)
    if vlm:
        images: list = []
        out = [{"role": m["role"], "content": _structured(m.get("content"), base_dir, images)} for m in messages]
        return {"messages": out, "images": images}
    return {"messages": text_messages(messages, captions)}


def _pair_fields(pair: Any) -> tuple[list[dict[str, Any]], str, str]:
    get = pair.get if isinstance(pair, dict) else lambda k: getattr(pair, k, None)
    prompt, chosen, rejected = get("prompt"), get("chosen"), get("rejected")
    if prompt is None or chosen is None or rejected is None:
        raise ConfigError("a preference pair needs prompt (messages), chosen and rejected (assistant step texts).")
    unwrap = lambda x: x[0]["content"] if isinstance(x, list) else x  # noqa: E731 - [assistant msg] or str
    return as_messages(prompt), unwrap(chosen), unwrap(rejected)


def pair_to_row(pair: Any, *, vlm: bool, captions: Mapping[str, str] | None = None,
                base_dir: Path | None = None) -> dict[str, Any]:
    """A step preference pair -> TRL DPO row ``{"prompt", "chosen", "rejected"[, "images"]}``."""
    prompt, chosen, rejected = _pair_fields(pair)
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise _Drop("non_text_completion")
    if chosen.strip() == rejected.strip():
        raise _Drop("chosen_equals_rejected")
    row = conversation_to_row(prompt, vlm=vlm, captions=captions, base_dir=base_dir)
    wrap = (lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]) if vlm else (
        lambda t: [{"role": "assistant", "content": t}])
    out = {"prompt": row["messages"], "chosen": wrap(chosen), "rejected": wrap(rejected)}
    if vlm:
        out["images"] = row["images"]
    return out


# --- rows -> token ids + assistant-only labels ------------------------------------------------

@dataclass
class EncodedSample:
    """One training sequence: ids, labels (IGNORE_INDEX outside assistant turns), and its images."""

    input_ids: list[int]
    labels: list[int]
    text: str  # exactly the text the ids encode (the collator hands it to the processor with the images)
    images: list = field(default_factory=list)
    n_assistant_turns: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class _Segment:
    text: str
    supervised: bool
    ids: list[int] = field(default_factory=list)
    n_images: int = 0


class ChatCodec:
    """Renders and tokenizes chats for one model: a VLM processor or a text tokenizer.

    The same codec encodes training samples and inference prompts (``encode_prompt``), so a student
    is served with token-for-token the prompt layout it was trained on.
    """

    def __init__(self, processing: Any):
        from transformers import ProcessorMixin

        self.processing = processing
        self.is_vlm = isinstance(processing, ProcessorMixin)
        self.tokenizer = processing.tokenizer if self.is_vlm else processing
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.image_token = getattr(processing, "image_token", None) if self.is_vlm else None
        if self.is_vlm and not self.image_token:
            raise ConfigError(f"{type(processing).__name__} names no image_token: mmat cannot place images for it; "
                              "use an Idefics3/SmolVLM, LLaVA or Qwen2-VL processor.")
        if not getattr(processing, "chat_template", None) and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("the model has no chat template: pick an instruct/chat model or set "
                              "tokenizer.chat_template in the model directory.")
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token) if self.image_token else None

    # rows
    def row(self, conversation: Any, captions: Mapping[str, str] | None = None, base_dir: Path | None = None) -> dict:
        return conversation_to_row(conversation, vlm=self.is_vlm, captions=captions, base_dir=base_dir)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return self.processing.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    # segments
    def segments(self, messages: list[dict[str, Any]], *, generation_prompt: bool = False) -> list[_Segment]:
        """Alternating prompt / assistant-completion segments covering the rendered chat exactly."""
        full = self.render(messages, add_generation_prompt=generation_prompt)
        cuts: list[tuple[int, int]] = []
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            if i == 0:
                raise _Drop("starts_with_assistant")
            before = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[: i + 1], add_generation_prompt=False)
            if not upto.startswith(before) or not full.startswith(upto):
                raise _Drop("template_not_prefix_stable")
            start, end = len(before), len(upto.rstrip())
            if end <= start or (cuts and start < cuts[-1][1]):
                raise _Drop("template_not_prefix_stable")
            cuts.append((start, end))
        segs, pos = [], 0
        for start, end in cuts:
            segs.append(_Segment(full[pos:start], False))
            segs.append(_Segment(full[start:end], True))
            pos = end
        segs.append(_Segment(full[pos:], False))
        return [s for s in segs if s.text]

    def _tokenize(self, segs: list[_Segment], images: list) -> None:
        remaining = list(images)
        for seg in segs:
            seg.n_images = seg.text.count(self.image_token) if self.image_token else 0
            if seg.n_images and seg.supervised:
                raise _Drop("image_in_assistant_turn")
            if seg.n_images > len(remaining):
                raise _Drop("image_placeholder_mismatch")
            if seg.n_images:
                mine, remaining = remaining[: seg.n_images], remaining[seg.n_images:]
                enc = self.processing(text=[seg.text], images=[mine], add_special_tokens=False)
                seg.ids = list(enc["input_ids"][0])
            else:
                seg.ids = self.tokenizer(seg.text, add_special_tokens=False)["input_ids"]
        if remaining:
            raise _Drop("image_placeholder_mismatch")

    def encode(self, row: dict[str, Any], max_length: int, overflow: Overflow = "drop_turns") -> tuple[EncodedSample, int]:
        """A TRL row -> (sample, assistant turns trimmed away). Raises ``_Drop`` with a reason."""
        messages, images = row["messages"], row.get("images", [])
        if not any(m["role"] == "assistant" for m in messages):
            raise _Drop("no_assistant_turn")
        segs = self.segments(messages)
        self._tokenize(segs, images)
        # Keep the longest prefix that ends on an assistant segment and fits in max_length.
        total, keep = 0, -1
        for j, seg in enumerate(segs):
            total += len(seg.ids)
            if total > max_length:
                break
            if seg.supervised:
                keep = j
        all_turns = sum(s.supervised for s in segs)
        if keep < 0:
            raise _Drop("too_long")
        kept = segs[: keep + 1]
        n_turns = sum(s.supervised for s in kept)
        if n_turns < all_turns and overflow == "drop_sample":
            raise _Drop("too_long")
        ids, labels = [], []
        for seg in kept:
            ids += seg.ids
            labels += seg.ids if seg.supervised else [IGNORE_INDEX] * len(seg.ids)
        n_img = sum(s.n_images for s in kept)
        sample = EncodedSample(ids, labels, "".join(s.text for s in kept), list(images[:n_img]), n_turns)
        return sample, all_turns - n_turns

    def end_of_turn_ids(self) -> list[int]:
        """Token ids that close an assistant turn in this template (generation stops on them)."""
        probe = "Yes"
        user = [{"type": "text", "text": "Hi"}] if self.is_vlm else "Hi"
        answer = [{"type": "text", "text": probe}] if self.is_vlm else probe
        segs = self.segments([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])
        turn = next(s.text for s in segs if s.supervised)
        tail = turn[turn.index(probe) + len(probe):]
        ids = set(self.tokenizer(tail, add_special_tokens=False)["input_ids"]) & set(self.tokenizer.all_special_ids)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    def encode_prompt(self, messages: list[dict[str, Any]], images: list) -> list[int]:
        """Token ids of a chat prompt ending in the generation prompt, segmented as in training."""
        segs = self.segments(messages, generation_prompt=True)
        try:
            self._tokenize(segs, images)
        except _Drop as e:
            raise ConfigError(f"cannot encode this chat for the model ({e.reason}); check the images and the chat "
                              "template.") from None
        return [t for s in segs for t in s.ids]


def encode_rows(rows: Iterable[Any], codec: ChatCodec, *, max_length: int, overflow: Overflow = "drop_turns",
                captions: Mapping[str, str] | None = None, base_dir: Path | None = None,
                ) -> tuple[list[EncodedSample], SelectionReport]:
    """Conversations (or ready TRL rows) -> encoded samples + the report of what was kept and dropped."""
    if max_length < 8:
        raise ConfigError(f"max_length={max_length} is too small to hold any turn: use at least a few hundred tokens.")
    samples: list[EncodedSample] = []
    reasons: Counter[str] = Counter()
    n_rows = trimmed = turns_dropped = 0
    for item in rows:
        n_rows += 1
        try:
            row = item if _is_row(item, codec.is_vlm) else codec.row(item, captions, base_dir)
            sample, lost = codec.encode(row, max_length, overflow)
        except _Drop as e:
            reasons[e.reason] += 1
            continue
        samples.append(sample)
        if lost:
            trimmed += 1
            turns_dropped += lost
    report = SelectionReport(
        n_rows=n_rows, n_samples=len(samples), n_dropped=n_rows - len(samples), reasons=dict(reasons),
        n_trimmed=trimmed, turns_dropped=turns_dropped,
        n_tokens=sum(len(s) for s in samples), n_supervised_tokens=sum(s.n_supervised for s in samples),
    )
    return samples, report


def _is_row(item: Any, vlm: bool) -> bool:
    """Already a TRL row (placeholders + PIL images, or string contents for text students)?"""
    if not isinstance(item, dict) or "messages" not in item:
        return False
    if vlm:
        return "images" in item
    return all(isinstance(m.get("content"), str) for m in item["messages"])
