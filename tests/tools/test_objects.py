"""objectlocation: unavailable without local weights; with (tiny, random) OWLv2 weights the backend runs."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from mmat.tools import ToolUnavailableError, tool_status


def test_without_weights_the_tool_says_where_to_put_them(make_host, settings, workspace):
    Image.new("RGB", (64, 64)).save(workspace / "a.png")
    with pytest.raises(ToolUnavailableError) as err:
        make_host(names=["objectlocation"]).call("objectlocation", {"object": "cat", "image_path": "a.png"})
    assert str(settings.models_dir / "owlv2") in str(err.value)
    assert "google/owlv2-base-patch16-ensemble" in str(err.value)
    assert str(err.value).endswith("Solve this step without objectlocation.")


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol alone and word-final, plus the two special tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return vocab


@pytest.mark.slow
def test_owlv2_backend_runs_from_local_weights(make_host, settings, workspace):
    import torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    vocab = _byte_vocab()
    cfg = Owlv2Config(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16,
                     "bos_token_id": len(vocab) - 2, "eos_token_id": len(vocab) - 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(cfg)
    with torch.no_grad():  # a zero last box layer predicts each patch's own cell: real, distinct boxes
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    target = settings.models_dir / "owlv2"
    model.save_pretrained(target)
    Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": 64, "width": 64}),
                   tokenizer=CLIPTokenizer(vocab=vocab, merges=[])).save_pretrained(target)
    assert [r.available for r in tool_status(settings) if r.tool == "objectlocation"] == [True]

    Image.new("RGB", (300, 200), "white").save(workspace / "room.png")
    out = make_host().call("objectlocation", {"object": "cat", "image_path": "room.png"})
    head, *boxes = out.splitlines()
    assert re.fullmatch(r"\d+ 'cat' found in 'room.png' \(300x200\), boxes as \[x1, y1, x2, y2\]:", head), out
    assert 1 <= len(boxes) <= 10
    for line in boxes:
        match = re.match(r"\[(\d+), (\d+), (\d+), (\d+)\] score [01]\.\d\d", line)
        assert match, out
        x1, y1, x2, y2 = map(int, match.groups())
        assert 0 <= x1 < x2 <= 300 and 0 <= y1 < y2 <= 200
