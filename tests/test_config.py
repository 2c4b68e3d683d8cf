"""Settings precedence: defaults < mmat.toml < MMAT_* env < CLI flags (explicit overrides)."""

from pathlib import Path

import pytest

from mmat.config import DEFAULT_TEACHER, load_settings
from mmat.errors import ConfigError


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    for var in ("MMAT_HOME", "MMAT_TEACHER", "MMAT_CONCURRENCY", "MMAT_CONFIG", "MMAT_TEMPERATURE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env):
    s = load_settings()
    assert s.teacher == DEFAULT_TEACHER
    assert s.home == Path(".mmat")
    assert s.db_path == Path(".mmat/mmat.duckdb")
    assert s.controller_model == DEFAULT_TEACHER  # roles fall back to the teacher


def test_toml_beats_defaults(clean_env):
    (clean_env / "mmat.toml").write_text('teacher = "openai/gpt-4o-mini"\nconcurrency = 3\n')
    s = load_settings()
    assert (s.teacher, s.concurrency) == ("openai/gpt-4o-mini", 3)


def test_env_beats_toml(clean_env, monkeypatch):
    (clean_env / "mmat.toml").write_text('teacher = "openai/gpt-4o-mini"\nconcurrency = 3\n')
    monkeypatch.setenv("MMAT_CONCURRENCY", "7")
    s = load_settings()
    assert (s.teacher, s.concurrency) == ("openai/gpt-4o-mini", 7)


def test_flags_beat_env(clean_env, monkeypatch):
    monkeypatch.setenv("MMAT_CONCURRENCY", "7")
    monkeypatch.setenv("MMAT_TEACHER", "ollama/llama3")
    s = load_settings(concurrency=2, teacher=None)  # None = flag not given
    assert (s.teacher, s.concurrency) == ("ollama/llama3", 2)


def test_mmat_config_points_at_another_file(clean_env, monkeypatch):
    other = clean_env / "elsewhere.toml"
    other.write_text('verifier = "anthropic/claude-x"\n')
    monkeypatch.setenv("MMAT_CONFIG", str(other))
    assert load_settings().judge_model == "anthropic/claude-x"


def test_missing_config_file_is_a_clear_error(clean_env, monkeypatch):
    monkeypatch.setenv("MMAT_CONFIG", "nope.toml")
    with pytest.raises(ConfigError, match="MMAT_CONFIG=nope.toml does not exist"):
        load_settings()


def test_invalid_value_names_the_field(clean_env, monkeypatch):
    monkeypatch.setenv("MMAT_CONCURRENCY", "zero")
    with pytest.raises(ConfigError, match=r"concurrency: .*fix mmat.toml, the MMAT_\* variable or the flag"):
        load_settings()


def test_unknown_key_in_toml_is_rejected(clean_env):
    (clean_env / "mmat.toml").write_text('teachr = "x"\n')
    with pytest.raises(ConfigError, match="teachr"):
        load_settings()


def test_malformed_toml(clean_env):
    (clean_env / "mmat.toml").write_text("teacher = \n")
    with pytest.raises(ConfigError, match="cannot read mmat.toml"):
        load_settings()


def test_every_field_has_help_text():
    from mmat.config import Settings

    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []
