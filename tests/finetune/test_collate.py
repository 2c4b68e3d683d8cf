"""Batching: padding-free packing is exact, padded batches keep labels, VLM batches carry pixels."""

from __future__ import annotations

import pytest
import torch

from mmat.finetune.collate import SFTCollator, packing_is_exact
from mmat.finetune.data import IGNORE_INDEX, ChatCodec, encode_rows


@pytest.fixture
def text_batch(text_lm, agent_conversation):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    codec = ChatCodec(AutoTokenizer.from_pretrained(text_lm))
    short = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "final_answer('4')"}]
    samples, _ = encode_rows([agent_conversation, short], codec, max_length=4096)
    assert len(samples[0]) != len(samples[1])
    return AutoModelForCausalLM.from_pretrained(text_lm).eval(), codec, samples


def test_packed_batch_gives_the_padded_batch_loss(text_batch):
    model, codec, samples = text_batch
    padded = SFTCollator(codec, padding_free=False)(samples)
    packed = SFTCollator(codec, padding_free=True)(samples)
    assert packed["input_ids"].shape == (1, sum(len(s) for s in samples))
    assert "attention_mask" not in packed
    with torch.no_grad():
        loss_padded = model(**padded).loss
        loss_packed = model(**packed).loss
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5)


def test_packing_never_supervises_across_samples(text_batch):
    _, codec, samples = text_batch
    packed = SFTCollator(codec, padding_free=True)(samples)
    start_of_second = len(samples[0])
    assert packed["labels"][0, 0] == IGNORE_INDEX and packed["labels"][0, start_of_second] == IGNORE_INDEX
    assert packed["position_ids"][0, start_of_second] == 0


def test_padded_batch_masks_padding(text_batch):
    _, codec, samples = text_batch
    batch = SFTCollator(codec)(samples)
    short = min(range(2), key=lambda i: len(samples[i]))
    n = len(samples[short])
    assert batch["attention_mask"][short, n:].sum() == 0
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert batch["labels"][short, :n].tolist() == samples[short].labels


def test_packing_check_accepts_llama(text_batch):
    model, codec, _ = text_batch
    assert packing_is_exact(model, codec)


def test_vlm_batch_carries_pixels_for_every_image(idefics3, agent_conversation):
    from transformers import AutoProcessor

    codec = ChatCodec(AutoProcessor.from_pretrained(idefics3))
    text_only = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    samples, _ = encode_rows([agent_conversation, text_only], codec, max_length=4096)
    batch = SFTCollator(codec)(samples)
    assert batch["pixel_values"].shape[:2] == (2, 2)  # (batch, max images per sample, ...)
    assert int((batch["input_ids"] == codec.image_token_id).sum()) == 2 * 4


def test_length_buckets_cut_padding_and_stay_deterministic():
    import random

    from mmat.finetune.collate import LengthBucketSampler

    rng = random.Random(7)
    lengths = [rng.randint(50, 1000) for _ in range(40)]
    sampler = LengthBucketSampler(lengths, batch_size=4, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(40))  # every sample exactly once per epoch
    assert order == list(LengthBucketSampler(lengths, batch_size=4, seed=3))  # resumable: same (seed, epoch)

    def padded(idx):
        return sum(max(lengths[i] for i in idx[k:k + 4]) * len(idx[k:k + 4]) for k in range(0, len(idx), 4))

    shuffled = list(range(40))
    random.Random(0).shuffle(shuffled)
    assert padded(order) - sum(lengths) < 0.25 * (padded(shuffled) - sum(lengths))
    assert max(lengths[i] for i in order[:4]) == max(lengths)  # the longest batch goes first
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new epoch reshuffles the batches
