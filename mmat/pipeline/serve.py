"""`mmat serve ADAPTER_DIR`: serve a tuned student to `mmat eval` / `mmat prefs` over HTTP.

Two engines. **vllm** (CUDA machines with the vllm package): the base model with the LoRA adapter
mounted (``--enable-lora --lora-modules NAME=DIR``), the adapter's own chat template, bound to
127.0.0.1. **local** (anywhere): mmat's local provider behind an OpenAI-compatible endpoint
(``mmat.local.server``). Either way the agent then uses ``hosted_vllm/NAME`` with ``--api-base``.

Before printing anything the adapter is checked against what vLLM's LoRA loader accepts: PEFT LoRA
weights on language-model modules only (no vision-tower modules, no ``modules_to_save``, no DoRA,
no bias) — ``adapter_problems`` lists what is wrong.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from mmat.errors import ConfigError
from mmat.finetune.models import VISION_MODULE_TAGS

__all__ = ["ServePlan", "plan_serve", "adapter_problems", "vllm_available", "run_local_server"]

Engine = Literal["auto", "vllm", "local"]


class ServePlan(BaseModel):
    """What `mmat serve` will run, and how the agent reaches it."""

    engine: Literal["vllm", "local"]
    served_name: str
    adapter_dir: Path
    base_model: str
    host: str
    port: int
    command: list[str]
    why: str

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def render(self) -> str:
        return "\n".join([
            f"engine: {self.engine} ({self.why})",
            f"serve:  {shlex.join(self.command)}",
            f"then:   mmat eval --controller hosted_vllm/{self.served_name} --api-base {self.api_base} --bench FILE",
            f"        mmat prefs --controller hosted_vllm/{self.served_name} --api-base {self.api_base}",
        ])


def vllm_available() -> tuple[bool, str]:
    """(usable, why): vLLM needs its package and a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install vllm; it needs a CUDA GPU)"
    import torch

    if not torch.cuda.is_available():
        return False, "vllm is installed but no CUDA GPU is visible"
    return True, "vllm and a CUDA GPU are present"


def _adapter_config(adapter_dir: Path) -> dict:
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise ConfigError(f"{adapter_dir} is not a LoRA adapter directory (no adapter_config.json): pass the --out "
                          "directory of `mmat finetune sft|dpo`.")
    return json.loads(path.read_text())


def _weight_modules(adapter_dir: Path) -> set[str]:
    """Module names that carry LoRA weights in the saved adapter file."""
    from safetensors import safe_open

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return set()
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    return {k.split(".lora_")[0] for k in keys if ".lora_" in k}


def adapter_problems(adapter_dir: Path) -> list[str]:
    """Why vLLM's LoRA loader (or a language-model-only adapter contract) would refuse this adapter."""
    cfg = _adapter_config(adapter_dir)
    problems = []
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}, not LORA")
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    weights = _weight_modules(adapter_dir)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        problems.append("no adapter_model.safetensors")
    names = [*targets, *weights]
    vision = sorted({n for n in names if any(tag in n.split(".") for tag in VISION_MODULE_TAGS)})
    if vision:
        problems.append(f"LoRA on vision-tower modules: {', '.join(vision[:3])}")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save is set ({cfg['modules_to_save']}): vLLM serves LoRA deltas only")
    if cfg.get("use_dora"):
        problems.append("DoRA adapters are not LoRA deltas vLLM can mount")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg['bias']!r}: trained biases are not served by vLLM's LoRA")
    return problems


def plan_serve(adapter_dir: Path, *, engine: Engine = "auto", port: int = 8000, host: str = "127.0.0.1",
               served_name: str | None = None) -> ServePlan:
    """Choose the engine and build its command; refuse adapters vLLM would reject, with the reason."""
    adapter_dir = Path(adapter_dir).expanduser().resolve()
    cfg = _adapter_config(adapter_dir)
    problems = adapter_problems(adapter_dir)
    if problems:
        raise ConfigError(f"{adapter_dir} cannot be served as a LoRA adapter: {'; '.join(problems)}.")
    name = served_name or adapter_dir.name
    base = str(cfg.get("base_model_name_or_path") or "")
    usable, why = vllm_available()
    if engine == "vllm" and not usable:
        raise ConfigError(f"--engine vllm: {why}. Use --engine local: mmat's own OpenAI-compatible server "
                          "(slower, CPU is fine).")
    chosen = "vllm" if engine == "vllm" or (engine == "auto" and usable) else "local"
    if chosen == "vllm":
        command = ["vllm", "serve", base, "--host", host, "--port", str(port), "--enable-lora",
                   "--lora-modules", f"{name}={adapter_dir}", "--max-lora-rank", str(max(8, int(cfg.get("r", 16))))]
        template = adapter_dir / "chat_template.jinja"
        if template.is_file():  # the template the student was trained with
            command += ["--chat-template", str(template)]
    else:
        command = ["mmat", "serve", str(adapter_dir), "--engine", "local", "--host", host, "--port", str(port),
                   "--name", name, "--run"]
        if engine == "auto":
            why = f"{why}; using mmat's local engine"
    return ServePlan(engine=chosen, served_name=name, adapter_dir=adapter_dir, base_model=base, host=host, port=port,
                     command=command, why=why)


def run_local_server(plan: ServePlan, *, home: str | None = None) -> None:
    """Serve ``plan`` with uvicorn until interrupted (the local engine)."""
    import uvicorn

    from mmat.local.server import build_app

    app = build_app(str(plan.adapter_dir), plan.served_name, home=home)
    uvicorn.run(app, host=plan.host, port=plan.port, log_level="warning")
