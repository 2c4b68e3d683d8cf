"""mmat: multimodal agent tuning as a declarative DSPy program.

The public Python API is the curated list in ``__all__`` below — everything a notebook or a user's
package needs to compose, run, inspect and extend mmat. Names load on first use (PEP 562), so
``import mmat`` and the CLI start fast; ``mmat.Synthesis`` imports DSPy only when it is touched.

    import mmat
    settings = mmat.load_settings(teacher="openai/gpt-4o-mini")
    mmat.run_synth(settings, mmat.SynthRequest(tasks=20))
    frame = mmat.read_frame("select domain, count(*) from tasks group by 1", settings)
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# litellm fetches a price map from GitHub when first imported unless told not to; a notebook that does
# `import mmat, dspy` imports litellm before any mmat module could say so.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

# name -> module that defines it; grouped as a reader meets them
_API: dict[str, str] = {
    # configuration and errors
    "Settings": "mmat.config", "load_settings": "mmat.config",
    "MmatError": "mmat.errors", "ConfigError": "mmat.errors", "ModelOutputError": "mmat.errors",
    "SandboxError": "mmat.errors", "StoreError": "mmat.errors",
    # models
    "build_lm": "mmat.lm", "configure_litellm": "mmat.lm",
    # the store
    "Store": "mmat.store", "open_store": "mmat.store", "read_frame": "mmat.store",
    "run_lifecycle": "mmat.store",
    # programs (the stages and their composition) and what they return
    "Synthesis": "mmat.programs", "QueryGenerator": "mmat.programs", "FileGenerator": "mmat.programs",
    "QueryFileVerifier": "mmat.programs", "CodeAgent": "mmat.programs", "TrajectoryVerifier": "mmat.programs",
    "StepSampler": "mmat.programs", "StepJudge": "mmat.programs", "PreferenceWalk": "mmat.programs",
    "Seed": "mmat.programs", "make_seeds": "mmat.programs", "SeedResult": "mmat.programs",
    "TaskResult": "mmat.programs", "TrajectoryResult": "mmat.programs", "Trajectory": "mmat.programs",
    "AgentStep": "mmat.programs",
    # signatures (the prompts)
    "GenerateQueries": "mmat.signatures", "WriteFileCode": "mmat.signatures", "VerifyQueryFiles": "mmat.signatures",
    "CodeAgentStep": "mmat.signatures", "VerifyTrajectory": "mmat.signatures", "JudgeSteps": "mmat.signatures",
    # tools and plug-ins
    "tool": "mmat.tools", "Tool": "mmat.tools", "get_tool": "mmat.tools", "tool_names": "mmat.tools",
    "registered_tools": "mmat.tools", "describe_tools": "mmat.tools", "load_plugins": "mmat.plugins",
    # the sandbox
    "Sandbox": "mmat.sandbox", "Limits": "mmat.sandbox",
    # runners (what the CLI commands call)
    "run_synth": "mmat.pipeline.synth", "SynthRequest": "mmat.pipeline.synth",
    "run_verify": "mmat.pipeline.verify", "VerifyRequest": "mmat.pipeline.verify",
    "run_prefs": "mmat.pipeline.prefs", "PrefsRequest": "mmat.pipeline.prefs",
    "run_benchmark": "mmat.pipeline.evaluate", "EvalRequest": "mmat.pipeline.evaluate",
    "run_sft": "mmat.pipeline.finetune", "run_dpo": "mmat.pipeline.finetune",
    "run_export": "mmat.pipeline.exports", "run_import": "mmat.pipeline.importers",
    "build_report": "mmat.pipeline.report", "run_optimize": "mmat.pipeline.optimize",
    # training from Python
    "train_sft": "mmat.finetune", "train_dpo": "mmat.finetune", "TrainConfig": "mmat.finetune",
    "DPOTrainConfig": "mmat.finetune", "load_student": "mmat.finetune",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mmat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
