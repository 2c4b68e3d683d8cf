"""One typed Settings object: defaults < mmat.toml < MMAT_* environment < CLI flags.

All state lives under ``home`` (``MMAT_HOME``, default ``./.mmat``): the DuckDB file, content-addressed
blobs, the DSPy cache, converted models and adapters. Tests point MMAT_HOME at a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from mmat.errors import ConfigError

__all__ = ["Settings", "load_settings", "DEFAULT_TEACHER", "CONFIG_FILE_ENV", "StructuredOutput", "ROLES"]

DEFAULT_TEACHER = "local/smollm2-135m"
CONFIG_FILE_ENV = "MMAT_CONFIG"
StructuredOutput = Literal["auto", "json_schema", "json_object", "off"]  # path of the mmat.toml to read (default: ./mmat.toml if present)


# Model roles, in the order a shared model is named by (a role that is not set falls back to the one before).
ROLES = ("teacher", "controller", "verifier", "judge", "vqa_model")


class Settings(BaseSettings):
    """Every knob of mmat. Saved with every run (runs.settings) and every adapter (mmat_config.json)."""

    model_config = SettingsConfigDict(env_prefix="MMAT_", extra="forbid", validate_assignment=True)

    home: Path = Field(Path(".mmat"), description="Directory that holds the store, blobs, caches, models and adapters.")

    # models (litellm model strings; local/... are the embedded, offline models)
    teacher: str = Field(DEFAULT_TEACHER, description="Model that writes tasks and files (any litellm model string).")
    controller: str | None = Field(None, description="Model that drives the code agent; defaults to the teacher.")
    verifier: str | None = Field(None, description="Model that verifies tasks and trajectories; defaults to the teacher.")
    judge: str | None = Field(None, description="Model that ranks candidate steps for preference pairs; defaults to the verifier.")
    vqa_model: str | None = Field(None, description="Multimodal model behind the visualizer tool; none means the offline derived-VQA backend.")
    api_base: str | None = Field(None, description="Base URL for OpenAI-compatible servers (hosted_vllm/..., openai/... on a proxy).")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature for teacher calls.")
    max_tokens: int = Field(1024, gt=0, description="Maximum completion tokens per LM call.")
    num_retries: int = Field(3, ge=0, description="Retries with backoff on 429/5xx/timeouts from a model API before the stage counts as failed.")
    request_timeout_s: float = Field(120.0, gt=0, description="Seconds one request to a model server or API may take before it counts as timed out.")
    structured_output: StructuredOutput = Field(
        "auto", description="Ask OpenAI-compatible servers for the signature's JSON schema as response_format: auto "
        "(probe once per model, cached), json_schema, json_object or off. Local models are always constrained.")
    structured_output_for: dict[str, StructuredOutput] = Field(
        default_factory=dict, description="structured_output per role (teacher, controller, verifier, judge, vqa_model) "
        "or per model string, e.g. {\"judge\": \"off\"}; a model string wins over a role.")

    # synthesis
    concurrency: int = Field(4, ge=1, description="Seeds (or eval items) processed in parallel.")
    seed: int = Field(0, description="Seed for sampling domains, examples and pool images.")
    dedup_threshold: float = Field(0.92, ge=0.0, le=1.0, description="Cosine similarity above which a new query counts as a near-duplicate.")
    max_failed_share: float = Field(0.5, ge=0.0, le=1.0, description="synth exits with status 1 when more than this share of the seeds it ran failed by error (or when nothing was produced).")
    trajectories_per_task: int = Field(1, ge=1, description="Trajectories sampled per verified task (M-TRACE style).")
    file_retries: int = Field(3, ge=0, description="Times the teacher may fix its file-writing code after a traceback.")

    # rule checks (mmat.programs.rules): facts code checks before any verifier model is asked
    rules_off: list[str] = Field(
        [], description="Rule checks to skip, by name (README: rule checks), e.g. "
        "[\"query_language\"]; MMAT_RULES_OFF takes a JSON list.")
    rules_allow_fallback: bool = Field(False, description="Let a trajectory whose answer came from the fallback (final_answer never called) pass the rules.")
    rules_max_images: int = Field(3, ge=0, description="Most images (task files + step outputs) a trajectory may carry (MAT: 3).")
    rules_max_answer_chars: int = Field(2000, ge=1, description="Longest final answer the rules accept, in characters.")

    # agent
    agent_max_steps: int = Field(8, ge=1, description="Maximum agent steps before a fallback final answer (MAT: 8).")
    agent_error_tolerance: int = Field(3, ge=0, description="Consecutive code errors tolerated before the agent stops (MAT: 3 in synthesis).")
    agent_action_grammar: Literal["auto", "on", "off"] = Field(
        "auto", description="Decode a local controller's code as one tool call per step (a regex over the tools and the "
        "task's files): auto = the embedded 135M teacher and local adapters whose base is it, which otherwise write prose; "
        "on = any model whose provider takes field patterns (local/ models; mmat.lm.capabilities).")

    # sandbox
    step_timeout_s: float = Field(30.0, gt=0, description="Wall-clock limit for one sandboxed step.")
    sandbox_memory_mb: int = Field(2048, ge=128, description="Address-space limit of a sandbox worker, in MiB.")
    sandbox_pool: int = Field(2, ge=0, le=64, description="Sandbox workers kept started ahead of need, so an agent's "
                              "sandbox starts at once (a warm pool, never shared between trajectories); 0 turns it off.")

    # tools
    search_backend: str = Field("auto", description="ask_search_agent backend: auto, bm25, simulated or web.")
    search_corpus: Path | None = Field(None, description="Directory of text/markdown files for the bm25 search backend.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (init) > environment > mmat.toml > field defaults.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file()))

    # --- where state lives -------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "mmat.duckdb"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    def ensure_dirs(self) -> None:
        for d in (self.home, self.blobs_dir, self.cache_dir, self.models_dir, self.adapters_dir, self.workspaces_dir):
            d.mkdir(parents=True, exist_ok=True)

    # --- model roles fall back along teacher -> verifier -> judge ------------------------------
    @property
    def controller_model(self) -> str:
        return self.controller or self.teacher

    @property
    def verifier_model(self) -> str:
        return self.verifier or self.teacher

    @property
    def judge_model(self) -> str:
        return self.judge or self.verifier_model

    def role_model(self, role: str) -> str | None:
        """The model string a role uses (``teacher``, ``controller``, ``verifier``, ``judge``, ``vqa_model``)."""
        return {"teacher": self.teacher, "controller": self.controller_model, "verifier": self.verifier_model,
                "judge": self.judge_model, "vqa_model": self.vqa_model}[role]

    def to_record(self) -> dict[str, Any]:
        """JSON-able snapshot for the runs table and adapter dirs (no secrets live in Settings)."""
        return self.model_dump(mode="json")


def _config_file() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV}={explicit} does not exist: create it or unset {CONFIG_FILE_ENV}.")
        return path
    default = Path("mmat.toml")
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Settings from all sources; ``overrides`` are CLI flags (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid settings ({problems}): fix mmat.toml, the MMAT_* variable or the flag.") from None
    except ValueError as e:  # a malformed mmat.toml surfaces here (tomllib.TOMLDecodeError is a ValueError)
        raise ConfigError(f"cannot read mmat.toml: {e}") from None


def settings_markdown() -> str:
    """The README's settings table, generated from the fields so it cannot drift (tests compare)."""
    lines = ["| setting | env | default | what it does |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        default = "" if default is None else default
        lines.append(f"| `{name}` | `MMAT_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(lines)
