"""An exported row, read back the way each consumer documents it, is token for token mmat's own training sample;
and a fresh export trains one step in TRL (SFT on a tiny VLM, DPO on a tiny VLM, SFT on a text LM).

Decoding rules, from each consumer's documentation:
- LLaMA-Factory sharegpt: ``system`` column + ``messages`` by the role/content tags of dataset_info.json;
  each ``<image>`` in the text is the next entry of ``images``, resolved against ``media_dir`` (= dataset_dir).
- ms-swift: ``messages`` (system first); ``<image>`` tags take ``images`` in order, relative to ``ROOT_IMAGE_DIR``.
- HF / TRL: ``load_from_disk``; content parts ``{"type": "image"}`` take ``images`` in order.
- OpenAI: ``image_url`` parts with data URLs.
"""

import io
import json
import os
import re

import pytest

from mmat.config import load_settings
from mmat.pipeline.exports import run_export
from mmat.store import Store
from mmat.testing.trajectory_store import build_export_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = "dummy/agent"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mmat.testing.tiny_models import build_tiny_idefics3, build_tiny_llava, build_tiny_text_lm

    root = tmp_path_factory.mktemp("tiny")
    return {"idefics3": build_tiny_idefics3(root / "idefics3"), "llava": build_tiny_llava(root / "llava"),
            "text": build_tiny_text_lm(root / "text")}


@pytest.fixture
def ids(mmat_home, tmp_path):
    store = Store.for_settings(load_settings())
    try:
        return build_export_store(store, tmp_path / "scratch")
    finally:
        store.close()


def _codec(path):
    from mmat.finetune.data import ChatCodec
    from mmat.finetune.models import load_base

    _, processing, _ = load_base(str(path))
    return ChatCodec(processing)


def _own_samples(codec, *, multimodal=None):
    """mmat's own training samples for the default selection, keyed by trajectory."""
    from mmat.pipeline.training_data import load_conversations

    with Store.for_settings(load_settings(), read_only=True) as store:
        conversations, _ = load_conversations(store, model=MODEL, multimodal=multimodal)
    return {c.meta["traj_id"]: codec.encode(codec.row(c.messages), max_length=1 << 20)[0] for c in conversations}


def _image(ref, base):
    from PIL import Image

    from mmat.finetune.data import load_image

    return load_image(ref, base) if isinstance(ref, str) else Image.open(io.BytesIO(ref["bytes"])).convert("RGB")


def _tagged_to_parts(messages, images, base):
    """Text with ``<image>`` tags (LLaMA-Factory, swift) -> content parts + the images they take, in order."""
    out, taken = [], []
    for m in messages:
        parts = []
        for i, piece in enumerate(re.split(r"<image>", m["content"])):
            if i:
                parts.append({"type": "image"})
                taken.append(_image(images[len(taken)], base))
            parts.append({"type": "text", "text": piece})
        out.append({"role": m["role"], "content": parts})
    assert len(taken) == len(images)
    return {"messages": out, "images": taken}


def _decode_llamafactory(out):
    info = json.loads((out / "dataset_info.json").read_text())["mmat_sft"]
    cols, tags = info["columns"], info["tags"]
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant"}
    rows = json.loads((out / info["file_name"]).read_text())
    for row in rows:
        messages = [{"role": "system", "content": row[cols["system"]]}] + [
            {"role": roles[t[tags["role_tag"]]], "content": t[tags["content_tag"]]} for t in row[cols["messages"]]]
        yield _tagged_to_parts(messages, row.get(cols.get("images", "images"), []), out)


def _decode_swift(out):
    [entry] = [d for d in json.loads((out / "swift_dataset_info.json").read_text()) if d["dataset_name"] == "mmat_sft"]
    for line in (out / entry["dataset_path"]).read_text().splitlines():
        row = json.loads(line)
        yield _tagged_to_parts(row["messages"], row.get("images", []), out)


def _decode_hf(out):
    import datasets

    for row in datasets.load_from_disk(str(out / "mmat_sft")):
        messages = [{"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else
                                                    {"type": "text", "text": p["text"]} for p in m["content"]]}
                    for m in row["messages"]]
        yield {"messages": messages, "images": [im.convert("RGB") for im in row["images"]]}


def _decode_openai(out, codec):
    for line in (out / "mmat_sft.jsonl").read_text().splitlines():
        yield codec.row(json.loads(line)["messages"])


@pytest.mark.parametrize("fmt", ["llamafactory", "swift", "hf", "openai"])
@pytest.mark.parametrize("student", ["idefics3", "llava"])
def test_exported_rows_decode_to_mmat_training_samples_token_for_token(ids, tmp_path, tiny, fmt, student):
    codec = _codec(tiny[student])
    own = _own_samples(codec)
    out = tmp_path / fmt
    run_export(load_settings(), fmt, out, model=MODEL)
    order = [json.loads(line)["traj_id"] for line in (out / "mmat_trajectories.jsonl").read_text().splitlines()]
    decoded = {"llamafactory": _decode_llamafactory, "swift": _decode_swift, "hf": _decode_hf}.get(fmt)
    rows = list(decoded(out) if decoded else _decode_openai(out, codec))
    assert len(rows) == len(own) == 3
    for traj_id, row in zip(order, rows):
        sample, _ = codec.encode(row, max_length=1 << 20)
        assert sample.input_ids == own[traj_id].input_ids, traj_id
        assert sample.labels == own[traj_id].labels
        assert [im.tobytes() for im in sample.images] == [im.tobytes() for im in own[traj_id].images]
    assert sum(len(s.images) for s in own.values()) == 3


def test_text_export_decodes_to_the_text_student_samples(ids, tmp_path, tiny):
    import datasets

    codec = _codec(tiny["text"])
    own = _own_samples(codec, multimodal=False)
    result = run_export(load_settings(), "hf", tmp_path / "hf", model=MODEL, text=True)
    rows = datasets.load_from_disk(str(result.path))
    for row in rows:
        traj_id = json.loads(row["mmat"])["traj_id"]
        sample, _ = codec.encode({"messages": row["messages"]}, max_length=1 << 20)
        assert sample.input_ids == own[traj_id].input_ids and sample.labels == own[traj_id].labels


# --- a fresh export trains one step in TRL --------------------------------------------------------------------
def _trl_args(cls, out, **extra):
    return cls(output_dir=str(out), max_steps=1, per_device_train_batch_size=1, learning_rate=1e-3, report_to="none",
               save_strategy="no", logging_steps=1, use_cpu=True, bf16=False, disable_tqdm=True, **extra)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=r".*(language_model|text_model).*\.(q|v)_proj", task_type="CAUSAL_LM")


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_trl_sft_one_step_on_a_tiny_vlm_from_a_fresh_export(ids, tmp_path, tiny):
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    ds = datasets.load_from_disk(str(run_export(load_settings(), "hf", tmp_path / "hf", model=MODEL).path))
    model = AutoModelForImageTextToText.from_pretrained(tiny["idefics3"])
    trainer = SFTTrainer(model=model, args=_trl_args(SFTConfig, tmp_path / "run", max_length=None),
                         train_dataset=ds.remove_columns("mmat"), processing_class=AutoProcessor.from_pretrained(tiny["idefics3"]),
                         peft_config=_lora())
    trainer.train()
    assert trainer.state.global_step == 1 and _losses(trainer)[0] > 0


def test_trl_dpo_one_step_on_a_tiny_vlm_from_a_fresh_export(ids, tmp_path, tiny):
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    ds = datasets.load_from_disk(str(run_export(load_settings(), "hf", tmp_path / "hf", model=MODEL, pairs=True).path))
    model = AutoModelForImageTextToText.from_pretrained(tiny["idefics3"])
    trainer = DPOTrainer(model=model, args=_trl_args(DPOConfig, tmp_path / "run", max_length=None),
                         train_dataset=ds.remove_columns("mmat"), processing_class=AutoProcessor.from_pretrained(tiny["idefics3"]),
                         peft_config=_lora())
    trainer.train()
    assert trainer.state.global_step == 1 and _losses(trainer)[0] > 0


def test_trl_sft_one_step_on_a_text_lm_from_a_fresh_export(ids, tmp_path, tiny):
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    ds = datasets.load_from_disk(str(run_export(load_settings(), "hf", tmp_path / "hf", model=MODEL, text=True).path))
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny["text"]),
                         args=_trl_args(SFTConfig, tmp_path / "run", max_length=None),
                         train_dataset=ds.remove_columns("mmat"), processing_class=AutoTokenizer.from_pretrained(tiny["text"]),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainer.train()
    assert trainer.state.global_step == 1 and _losses(trainer)[0] > 0
