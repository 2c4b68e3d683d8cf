"""segmentation: GrabCut on a synthetic scene (known ground truth), SAM plumbing with a tiny random SAM."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from mmat.tools import ToolArgumentError

W, H, CX, CY, R = 400, 300, 210, 140, 60


@pytest.fixture
def disk_scene(workspace):
    """A dark red disk on a light, noisy background; returns its true mask."""
    rng = np.random.default_rng(0)
    img = (rng.normal(215, 12, (H, W, 3))).clip(0, 255)
    yy, xx = np.mgrid[:H, :W]
    truth = (xx - CX) ** 2 + (yy - CY) ** 2 <= R**2
    img[truth] = (rng.normal(0, 10, (truth.sum(), 3)) + (150, 30, 40)).clip(0, 255)
    Image.fromarray(img.astype(np.uint8)).save(workspace / "scene.png")
    return truth


def _mask(workspace, out: str) -> np.ndarray:
    name = re.match(r"Saved mask to (\S+) ", out).group(1)
    return np.asarray(Image.open(workspace / name)) > 0


def test_grabcut_segments_the_object_in_the_box(make_host, workspace, disk_scene):
    box = [CX - R - 25, CY - R - 25, CX + R + 25, CY + R + 25]
    out = make_host().call("segmentation", {"image_path": "scene.png", "prompt": str(box)})
    assert out.startswith("Saved mask to mask_1.png (400x300, white = object, GrabCut)")
    mask = _mask(workspace, out)
    assert mask.shape == (H, W)
    iou = (mask & disk_scene).sum() / (mask | disk_scene).sum()
    assert iou > 0.85
    area = int(re.search(r"object area (\d+) pixels", out).group(1))
    assert area == mask.sum()


def test_grabcut_on_a_large_image_returns_a_full_size_mask(make_host, workspace, disk_scene):
    big = Image.open(workspace / "scene.png").resize((W * 2, H * 2))  # runs at <= 512 px, mask scaled back
    big.save(workspace / "big.png")
    box = [2 * (CX - R - 25), 2 * (CY - R - 25), 2 * (CX + R + 25), 2 * (CY + R + 25)]
    out = make_host().call("segmentation", {"image_path": "big.png", "prompt": box})
    mask = _mask(workspace, out)
    assert mask.shape == (2 * H, 2 * W)
    truth = np.asarray(Image.fromarray(disk_scene).resize((2 * W, 2 * H)))
    assert (mask & truth).sum() / (mask | truth).sum() > 0.8


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("the red ball", "expected a box '\\[x1, y1, x2, y2\\]'"),
        ("[1, 2, 3]", "expected a box"),
        ("[500, 400, 600, 500]", "does not overlap the 400x300 image"),
    ],
)
def test_bad_prompts_explain_the_expected_box(make_host, disk_scene, prompt, message):
    with pytest.raises(ToolArgumentError, match=message):
        make_host().call("segmentation", {"image_path": "scene.png", "prompt": prompt})


@pytest.mark.slow
def test_sam_backend_runs_from_local_weights(make_host, settings, workspace, disk_scene):
    """A tiny random SAM saved where mmat looks: the tool switches to it and writes a full-size mask."""
    import torch
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    cfg = SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                       "output_channels": 32, "image_size": 128, "patch_size": 16, "global_attn_indexes": [1],
                       "window_size": 4, "num_pos_feats": 16},
        prompt_encoder_config={"hidden_size": 32, "image_size": 128, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                             "iou_head_hidden_dim": 32},
    )
    torch.manual_seed(0)
    target = settings.models_dir / "sam"
    SamModel(cfg).save_pretrained(target)
    SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": 128}, pad_size={"height": 128, "width": 128},
        mask_size={"longest_edge": 32}, mask_pad_size={"height": 32, "width": 32},
    )).save_pretrained(target)

    host = make_host()
    assert [r.backend for r in host.status() if r.tool == "segmentation" and r.active] == ["sam"]
    out = host.call("segmentation", {"image_path": "scene.png", "prompt": [100, 50, 300, 250]})
    assert "white = object, SAM" in out
    assert _mask(workspace, out).shape == (H, W)
