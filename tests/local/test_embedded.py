"""The real embedded teacher (SmolLM2-135M): converts once, then answers a typed signature that parses."""

from typing import Literal

import dspy
import pytest
from pydantic import BaseModel

from mmat.config import load_settings
from mmat.lm import adapter_for, build_lm
from mmat.local import MAX_ITEMS_PARAM, MAX_STRING_PARAM, load_local_model, local_weights_dir
from mmat.local.registry import CONVERTED_MARKER

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


class Task(BaseModel):
    query: str
    tools: list[str]
    modality: Literal["image", "document", "table"]


class WriteTask(dspy.Signature):
    """Write one question a user could ask an assistant that has tools, about the given topic."""

    topic: str = dspy.InputField()
    task: Task = dspy.OutputField()


@pytest.fixture(scope="module")
def teacher_settings(tmp_path_factory):
    # One home for the module: the ~1 minute GGUF conversion runs once.
    return load_settings(home=tmp_path_factory.mktemp("embedded_home"))


def test_first_use_converts_once_and_later_loads_reuse_the_copy(teacher_settings):
    path = local_weights_dir("smollm2-135m", teacher_settings)
    assert path == teacher_settings.models_dir / "smollm2-135m"
    assert (path / CONVERTED_MARKER).is_file() and (path / "model.safetensors").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no tmp dir left behind
    shared, tok = load_local_model("local/smollm2-135m", teacher_settings)
    fresh, _ = load_local_model("local/smollm2-135m", teacher_settings, fresh=True)
    assert fresh is not shared and tok.eos_token == "<|im_end|>"


def test_the_embedded_teacher_answers_a_typed_signature_that_parses(teacher_settings):
    lm = build_lm("local/smollm2-135m", settings=teacher_settings, max_tokens=400, **{MAX_STRING_PARAM: 120, MAX_ITEMS_PARAM: 4})
    with dspy.context(lm=lm, adapter=adapter_for(lm.model)):
        pred = dspy.Predict(WriteTask)(topic="household budgets")
    assert isinstance(pred.task, Task)
    assert 0 < len(pred.task.query) <= 120 and len(pred.task.tools) <= 4
    assert lm.history[-1]["usage"]["completion_tokens"] > 0
