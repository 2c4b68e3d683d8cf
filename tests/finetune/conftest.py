"""Fixtures for finetune tests: tiny random students built once per session, images, conversations.

The students (a Llama text LM, an Idefics3 and a LLaVA VLM; hidden 64, 2 layers, a 512-token
byte-level BPE) are written to a session temp dir and reloaded with the Auto classes, like any
downloaded model. Nothing touches a model hub.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _isolated_home(mmat_home: Path) -> Path:
    """Every finetune test runs with MMAT_HOME in a temp dir (``mmat_home`` comes from mmat.testing.fixtures)."""
    return mmat_home


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run ~10x faster on one thread than on two contended ones (measured on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_students")


@pytest.fixture(scope="session")
def text_lm(tiny_dir: Path) -> Path:
    from mmat.testing.tiny_models import build_tiny_text_lm

    return build_tiny_text_lm(tiny_dir / "text")


@pytest.fixture(scope="session")
def idefics3(tiny_dir: Path) -> Path:
    from mmat.testing.tiny_models import build_tiny_idefics3

    return build_tiny_idefics3(tiny_dir / "idefics3")


@pytest.fixture(scope="session")
def llava(tiny_dir: Path) -> Path:
    from mmat.testing.tiny_models import build_tiny_llava

    return build_tiny_llava(tiny_dir / "llava")


@pytest.fixture(scope="session")
def image_files(tiny_dir: Path) -> dict[str, str]:
    """Two image refs of distinct sizes: a PNG path (40x30 red) and a data URL (20x50 blue)."""
    from PIL import Image

    path = tiny_dir / "red.png"
    Image.new("RGB", (40, 30), (220, 30, 30)).save(path)
    buf = io.BytesIO()
    Image.new("RGB", (20, 50), (30, 70, 220)).save(buf, "PNG")
    return {"path": str(path), "data_url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}


@pytest.fixture(scope="session")
def agent_conversation(image_files: dict[str, str]) -> list[dict]:
    """A two-step agent trajectory in OpenAI chat format with an image in the task and one in an observation."""
    return [
        {"role": "system", "content": "You are an agent. Solve the task with Python code and tools."},
        {"role": "user", "content": [
            {"type": "text", "text": "Task: how many cats are in the picture?"},
            {"type": "image_url", "image_url": {"url": image_files["path"]}},
        ]},
        {"role": "assistant", "content": "Thought: I will locate the cats.\nCode:\n```py\nprint(objectlocation('cat'))\n```"},
        {"role": "user", "content": [
            {"type": "text", "text": "Observation: [[12, 30, 64, 80], [70, 22, 120, 96]]"},
            {"type": "image_url", "image_url": {"url": image_files["data_url"]}},
        ]},
        {"role": "assistant", "content": "Thought: two boxes.\nCode:\n```py\nfinal_answer('2')\n```"},
    ]
