"""Batching encoded samples: minimal padding for VLMs, padding-free packing for text LMs.

Why our own collator: the labels (assistant-only mask) are built in ``data.py`` and must survive
batching untouched, and on a CPU the padding that a random-order, pad-to-longest batch carries is
pure wasted compute. Two tools cut it:

- length-bucketed sampling (``LengthBucketSampler``): sort by (slightly jittered) length, cut into
  batches, shuffle the batch order each epoch — a batch holds samples of similar length. (The
  Trainer's ``LengthGroupedSampler`` sorts only within mega-batches of ``min(n // (4 * batch), 50)``
  batches: for a few hundred trajectories that is barely any grouping.)
- padding-free packing for text LMs: the batch becomes ONE row ``[1, sum(len_i)]`` with
  ``position_ids`` restarting at 0 for each sample and no attention mask; transformers' masking
  utilities turn the position resets into a block-diagonal causal mask. The first label of each
  sample is ignored so no sample learns to predict the next one's first token.

Images are turned into pixel tensors here, per batch (like TRL's VLM collator): preprocessing all
images of a data set up front would hold every pixel tensor in memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mmat.finetune.data import IGNORE_INDEX, ChatCodec, EncodedSample

__all__ = ["SFTCollator", "LengthBucketSampler", "packing_is_exact"]

_TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


@dataclass
class SFTCollator:
    """Encoded samples -> model inputs with ``labels``. ``padding_free`` only for text students."""

    codec: ChatCodec
    padding_free: bool = False

    def __call__(self, batch: list[EncodedSample]) -> dict[str, Any]:
        if self.padding_free:
            return self._packed(batch)
        out = self._padded(batch)
        if self.codec.is_vlm and any(s.images for s in batch):
            out.update(self._pixels(batch, out["input_ids"]))
        return out

    def _packed(self, batch: list[EncodedSample]) -> dict[str, Any]:
        import torch

        ids, pos, labels = [], [], []
        for s in batch:
            ids += s.input_ids
            pos += range(len(s))
            labels += [IGNORE_INDEX] + s.labels[1:]
        return {
            "input_ids": torch.tensor([ids]),
            "position_ids": torch.tensor([pos]),
            "labels": torch.tensor([labels]),
            # transformers detects packing only without a KV cache; the default use_cache=True creates one.
            "use_cache": False,
        }

    def _padded(self, batch: list[EncodedSample]) -> dict[str, Any]:
        import torch

        width = max(len(s) for s in batch)
        pad = self.codec.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, s in enumerate(batch):  # right padding: training needs no left alignment
            n = len(s)
            ids[i, :n] = torch.tensor(s.input_ids)
            labels[i, :n] = torch.tensor(s.labels)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def _pixels(self, batch: list[EncodedSample], input_ids) -> dict[str, Any]:
        """Image tensors for the batch from the model's own processor, checked against our image tokens."""
        enc = self.codec.processing(text=[s.text for s in batch], images=[list(s.images) for s in batch],
                                    add_special_tokens=False, padding=True, return_tensors="pt")
        tok_id = self.codec.image_token_id
        theirs = int((enc["input_ids"] == tok_id).sum())
        ours = int((input_ids == tok_id).sum())
        if theirs != ours:
            raise RuntimeError(f"image token count differs between the encoded batch ({ours}) and the processor "
                               f"({theirs}): a bug in mmat's segment encoding for {type(self.codec.processing).__name__}")
        return {k: v for k, v in enc.items() if k not in _TEXT_KEYS}


class LengthBucketSampler:
    """Sample indices so each consecutive ``batch_size`` chunk holds samples of similar length.

    Per epoch: sort by length times a random factor in ``[1 - jitter, 1 + jitter]`` (so batch
    composition varies a little between epochs), cut into batches, shuffle the batches, and put the
    longest batch first (an out-of-memory shows at step 1, not hours in). Deterministic for a given
    ``(seed, epoch)``, which is what resuming mid-epoch needs.
    """

    def __init__(self, lengths: list[int], batch_size: int, *, seed: int = 0, jitter: float = 0.1):
        self.lengths, self.batch_size, self.seed, self.jitter = list(lengths), batch_size, seed, jitter
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        keys = {i: n * rng.uniform(1 - self.jitter, 1 + self.jitter) for i, n in enumerate(self.lengths)}
        order = sorted(keys, key=keys.__getitem__)
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng.shuffle(batches)
        if batches:
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
            batches.insert(0, batches.pop(longest))
        return batches

    def __iter__(self) -> Iterator[int]:
        return iter([i for batch in self.batches() for i in batch])


def packing_is_exact(model, codec: ChatCodec, *, atol: float = 1e-4) -> bool:
    """Do two packed sequences give the same logits as each alone? (Decides padding-free on "auto".)

    Models whose attention ignores ``position_ids`` resets would let packed samples attend to each
    other; for them this returns False and batches are padded instead.
    """
    import torch

    a = codec.tokenizer("The first sample is here.", add_special_tokens=False)["input_ids"][:8]
    b = codec.tokenizer("And a second one follows it.", add_special_tokens=False)["input_ids"][:6]
    was_training = model.training
    model.eval()
    dev = model.device
    try:
        with torch.no_grad():
            sep_a = model(input_ids=torch.tensor([a], device=dev), use_cache=False).logits[0]
            sep_b = model(input_ids=torch.tensor([b], device=dev), use_cache=False).logits[0]
            positions = torch.tensor([list(range(len(a))) + list(range(len(b)))], device=dev)
            packed = model(input_ids=torch.tensor([a + b], device=dev), use_cache=False, position_ids=positions).logits[0]
    except (TypeError, ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return bool(torch.allclose(packed[: len(a)], sep_a, atol=atol) and torch.allclose(packed[len(a):], sep_b, atol=atol))
