"""Resolving local/... strings: embedded GGUF checks, model dirs, adapter dirs, clear errors."""

import json

import pytest

from mmat.errors import ModelUnavailableError
from mmat.local.registry import LOCAL_MODELS, EmbeddedModel, resolve_local

FAKE = EmbeddedModel(
    name="fake-model", package="mmat_fake_gguf_pkg", filename="fake.gguf", sha256="0" * 64,
    install_hint="pip install fake", description="test double",
)


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    """An embedded model whose package lives in tmp_path; returns the GGUF path (not yet written)."""
    pkg = tmp_path / "site" / FAKE.package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(LOCAL_MODELS, FAKE.name, FAKE)
    return pkg / FAKE.filename


def test_the_shipped_teacher_resolves_to_its_gguf_and_a_cache_dir(mmat_settings):
    spec = resolve_local("local/smollm2-135m", mmat_settings)
    assert spec.kind == "embedded" and spec.gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.model_dir == mmat_settings.models_dir / "smollm2-135m"
    assert resolve_local("smollm2-135m", mmat_settings) == spec


def test_missing_gguf_names_the_reinstall_command(fake_embedded, mmat_settings):
    with pytest.raises(ModelUnavailableError) as e:
        resolve_local("local/fake-model", mmat_settings)
    assert str(e.value) == f"the GGUF file of local/fake-model is missing ({fake_embedded}): run `pip install fake`"


def test_corrupt_gguf_names_the_reinstall_command(fake_embedded, mmat_settings):
    fake_embedded.write_bytes(b"NOPE" + b"\0" * (2 << 20))
    with pytest.raises(ModelUnavailableError) as e:
        resolve_local("local/fake-model", mmat_settings)
    assert str(e.value) == f"the GGUF file of local/fake-model is corrupt ({fake_embedded}): run `pip install fake`"


def test_uninstalled_package_says_how_to_install(monkeypatch, mmat_settings):
    monkeypatch.setitem(LOCAL_MODELS, "gone", FAKE.model_copy(update={"name": "gone", "package": "mmat_no_such_pkg"}))
    with pytest.raises(ModelUnavailableError, match=r"local/gone is not installed .*: run `pip install fake`"):
        resolve_local("local/gone", mmat_settings)


def test_unknown_name_and_empty_dir_errors(tmp_path, mmat_settings):
    with pytest.raises(ModelUnavailableError) as e:
        resolve_local("local/no-such-model", mmat_settings)
    assert str(e.value) == (
        "unknown local model 'local/no-such-model': use local/smollm2-135m, or local/<path to a Hugging Face "
        "model dir or LoRA adapter dir>"
    )
    with pytest.raises(ModelUnavailableError, match="has neither config.json nor adapter_config.json"):
        resolve_local(f"local/{tmp_path}", mmat_settings)


def test_model_dir_and_vision_detection(tmp_path, mmat_settings):
    text_dir, vision_dir = tmp_path / "text", tmp_path / "vlm"
    text_dir.mkdir()
    vision_dir.mkdir()
    (text_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (vision_dir / "config.json").write_text(json.dumps({"architectures": ["Idefics3ForConditionalGeneration"], "vision_config": {}}))
    text = resolve_local(f"local/{text_dir}", mmat_settings)
    assert text.kind == "hf_dir" and text.model_dir == text_dir and not text.vision
    assert resolve_local(f"local/{vision_dir}", mmat_settings).vision


def test_adapter_resolves_its_base(tmp_path, mmat_settings):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "local/smollm2-135m"}))
    spec = resolve_local(f"local/{adapter}", mmat_settings)
    assert spec.kind == "adapter" and spec.base.kind == "embedded" and spec.base.name == "smollm2-135m"
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/hub-model"}))
    hub = resolve_local(f"local/{adapter}", mmat_settings)
    assert hub.base is None and hub.base_ref == "org/hub-model"
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(ModelUnavailableError, match="names no base model"):
        resolve_local(f"local/{adapter}", mmat_settings)
