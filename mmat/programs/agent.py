"""CodeAgent: MAT's ReAct loop with Python code as the action.

Each step the model writes a thought and code (``CodeAgentStep``); the code runs in the sandbox with
the registered tools; the observation (output, tool results, error, new files) and any images the step
produced come back in the next user turn. The model's failures (bad code, an unreadable reply, a limit)
are observations and count as errors; ``error_tolerance`` consecutive errors are tolerated and one more
stops the run. When steps run out, or errors stop it, ``FallbackAnswer`` answers from the trajectory.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dspy

from mmat.config import Settings, load_settings
from mmat.errors import ModelOutputError
from mmat.programs._calls import active_lm, call_predictor, lm_is_multimodal, mark, strip_code_fences, stage_signature
from mmat.programs.agent_turns import agent_step_inputs, render_tools
from mmat.programs.files import IMAGE_SUFFIXES, GeneratedFile, list_files
from mmat.programs.trajectory import AgentStep, Trajectory, answer_text, render_observation, render_steps
from mmat.signatures.agent import CodeAgentStep, FallbackAnswer
from mmat.store.context import attributed

__all__ = ["CodeAgent", "stage_files", "unreadable_step", "UNREADABLE_REPLY"]

UNREADABLE_REPLY = (
    "Your last reply could not be read. Answer with the two fields `thought` and `code`, in the format "
    "described at the start of this conversation."
)


def unreadable_step(idx: int, error: ModelOutputError, *, duration_ms: float = 0.0) -> AgentStep:
    """The step recorded when the model's reply could not be read: no code ran; the model is told why."""
    return AgentStep(idx=idx, observation=UNREADABLE_REPLY, error=f"ModelOutputError: {error}", duration_ms=duration_ms)


def stage_files(files: Sequence[GeneratedFile], workspace: Path) -> list[GeneratedFile]:
    """Copy the task's files into ``workspace`` under their names; returns them with workspace paths."""
    workspace.mkdir(parents=True, exist_ok=True)
    workspace = workspace.resolve()  # the sandbox reports files under the resolved path too
    staged = []
    for f in files:
        target = workspace / f.name
        if Path(f.path).resolve() != target.resolve():
            shutil.copyfile(f.path, target)
        staged.append(f.model_copy(update={"path": target}))
    return staged


MAX_STEP_IMAGE_BYTES = 64 * 1024 * 1024  # the sandbox's default file-size limit


def export_step_images(workspace: Path, idx: int, new_files: Sequence[str]) -> list[str]:
    """Copies of a step's new images in ``<workspace>.images/step<idx>/``, outside the sandbox's reach.

    Code in the sandbox may still be running (a thread it started) and may swap these files for
    links to host files: each is read once, without following links (regular files only), and the
    copy is what the model sees and the store keeps. A file swapped for something else is skipped."""
    from mmat.sandbox.workspace import export_file

    out, kept = workspace.parent / f"{workspace.name}.images" / f"step{idx}", []
    for rel in new_files:
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            kept.append(str(export_file(workspace, rel, out / rel, MAX_STEP_IMAGE_BYTES)))
        except OSError:
            continue
    return kept


class CodeAgent(dspy.Module):
    """Solve a task with code and tools in a sandbox; returns a typed Trajectory."""

    _mmat_name = "code_agent"

    def __init__(
        self,
        tools: Sequence[str],
        *,
        settings: Settings | None = None,
        max_steps: int | None = None,
        error_tolerance: int | None = None,
        multimodal: bool | None = None,
        limits: Any = None,
        tool_lm: Any = None,
        signature: type[CodeAgentStep] | None = None,
    ):
        super().__init__()
        self.settings = settings or load_settings()
        self.tools = list(tools)
        self.max_steps = max_steps if max_steps is not None else self.settings.agent_max_steps
        self.error_tolerance = error_tolerance if error_tolerance is not None else self.settings.agent_error_tolerance
        self.multimodal = multimodal
        self.limits = limits
        self.tool_lm = tool_lm
        self.step = mark(dspy.Predict(stage_signature(signature, CodeAgentStep)), "code_agent.step")
        self.fallback = mark(dspy.Predict(FallbackAnswer), "code_agent.fallback")

    # --- building blocks (StepSampler reuses them) ------------------------------------------------
    def is_multimodal(self) -> bool:
        return self.multimodal if self.multimodal is not None else lm_is_multimodal(active_lm(self.step))

    def tool_host(self, workspace: Path, files: Sequence[GeneratedFile], tools: Sequence[str] | None = None) -> Any:
        """The tools bound to ``workspace``; task images' pool captions reach the offline visualizer."""
        from mmat.tools import WorkspaceToolHost

        captions = {f.name: f.caption for f in files if f.is_image and f.caption}
        names = list(tools) if tools is not None else self.tools
        return WorkspaceToolHost(self.settings, workspace, names=names, lm=self.tool_lm,
                        caption_lookup=lambda p: captions.get(Path(p).name))

    def open_sandbox(self, workspace: Path, files: Sequence[GeneratedFile], tools: Sequence[str] | None = None) -> Any:
        """A sandbox on ``workspace`` (which holds ``files``) with the tools: a warm one from the
        process's pool (``sandbox_pool`` setting; never shared between trajectories) when it has one."""
        from mmat.sandbox import Sandbox
        from mmat.sandbox.limits import Limits
        from mmat.sandbox.pool import shared_pool

        limits = self.limits or Limits.from_settings(self.settings)
        host = self.tool_host(workspace, files, tools)
        pool = shared_pool(self.settings, limits)
        if pool is not None:
            return pool.acquire(workspace, tools=host, limits=limits)
        return Sandbox(workspace, tools=host, limits=limits, inputs=[])

    def propose(self, task: str, files: Sequence[GeneratedFile], steps: Sequence[AgentStep], *, tools: Sequence[str],
                multimodal: bool, config: dict[str, Any] | None = None) -> tuple[str, str]:
        """The model's next (thought, code) after ``steps``; ModelOutputError when its reply is unreadable."""
        inputs = agent_step_inputs(task, files, render_tools(tools), steps, multimodal=multimodal)
        config = dict(config or {})
        if self.uses_action_grammar():
            from mmat.local import FIELD_PATTERNS_PARAM
            from mmat.programs.action_grammar import action_pattern

            config[FIELD_PATTERNS_PARAM] = {"code": action_pattern(tools, files)}
        pred = call_predictor(self.step, "agent step", config=config, **inputs)
        return (pred.thought or "").strip(), pred.code or ""

    def uses_action_grammar(self) -> bool:
        """Whether the controller's code is decoded under the one-tool-call grammar (``agent_action_grammar``).
        Only a model whose provider takes per-field patterns can be constrained (``mmat.lm.capabilities``), and
        only under the JSON adapter, which sends a schema. ``auto`` covers the models that declare they need it
        (the embedded model and local models or adapters built on it)."""
        mode = self.settings.agent_action_grammar
        model = getattr(active_lm(self.step), "model", None) or ""
        if mode == "off" or not model or not isinstance(dspy.settings.adapter, dspy.JSONAdapter):
            return False
        from mmat.errors import ModelUnavailableError
        from mmat.lm import capabilities

        try:
            caps = capabilities(model, self.settings)
        except ModelUnavailableError:
            return False
        return caps.field_patterns and (mode == "on" or caps.action_grammar_by_default)

    @staticmethod
    def execute(sandbox: Any, idx: int, thought: str, code: str, workspace: Path) -> AgentStep:
        """Run one step's code and turn the result into an AgentStep."""
        result = sandbox.run(strip_code_fences(code))
        images = export_step_images(workspace, idx, result.new_files)
        error = f"{result.error.type}: {result.error.message}" if result.error is not None else None
        return AgentStep(
            idx=idx, thought=thought, code=code, observation=render_observation(result, result.new_files),
            tool_calls=result.tool_calls, error=error, images=images, duration_ms=result.duration_ms,
            final_answer=answer_text(result.final_answer) if result.has_final_answer else None,
        )

    def take_step(self, task: str, files: Sequence[GeneratedFile], steps: Sequence[AgentStep], sandbox: Any,
                  workspace: Path, idx: int, *, tools: Sequence[str], multimodal: bool,
                  config: dict[str, Any] | None = None) -> AgentStep:
        """Propose the next step and run it; an unreadable reply becomes an error step the model sees."""
        started = time.perf_counter()
        try:
            thought, code = self.propose(task, files, steps, tools=tools, multimodal=multimodal, config=config)
        except ModelOutputError as e:
            return unreadable_step(idx, e, duration_ms=(time.perf_counter() - started) * 1000)
        return self.execute(sandbox, idx, thought, code, workspace)

    # --- the loop -----------------------------------------------------------------------------
    def forward(self, task: str, files: Sequence[GeneratedFile], workspace: Path, *,
                tools: Sequence[str] | None = None, config: dict[str, Any] | None = None) -> Trajectory:
        """Run the task in ``workspace`` (files are copied in); ``tools`` overrides the agent's tool list."""
        workspace = Path(workspace)
        tools = list(tools) if tools is not None else self.tools
        files = stage_files(files, workspace)
        multimodal = self.is_multimodal()
        with self.open_sandbox(workspace, files, tools) as sandbox:
            return self.run(task, files, sandbox, workspace, tools=tools, multimodal=multimodal, config=config)

    def run(self, task: str, files: Sequence[GeneratedFile], sandbox: Any, workspace: Path, *, tools: Sequence[str],
            multimodal: bool, config: dict[str, Any] | None = None,
            next_step: Callable[[int, list[AgentStep]], AgentStep] | None = None) -> Trajectory:
        """The ReAct loop on an open sandbox whose workspace already holds ``files``.

        ``next_step(idx, steps)`` replaces "propose one step and run it" (PreferenceWalk samples and judges
        several there); the loop's rules (step budget, error tolerance, fallback answer) stay the same."""
        tools = list(tools)
        if next_step is None:
            def next_step(idx: int, steps: list[AgentStep]) -> AgentStep:
                return self.take_step(task, files, steps, sandbox, workspace, idx, tools=tools, multimodal=multimodal,
                                      config=config)
        steps: list[AgentStep] = []
        n_errors = consecutive = 0
        status = "fallback"
        for idx in range(self.max_steps):
            with attributed(step_idx=idx):
                step = next_step(idx, steps)
            steps.append(step)
            if step.final_answer is not None:
                return Trajectory(steps=steps, answer=step.final_answer, status="answered", n_errors=n_errors,
                                  tools=tools, multimodal=multimodal)
            if step.error is None:
                consecutive = 0
                continue
            n_errors += 1
            consecutive += 1
            if consecutive > self.error_tolerance:
                status = "error_limit"
                break
        answer = self.fallback_answer(task, files, steps, config=config)
        return Trajectory(steps=steps, answer=answer, status=status, n_errors=n_errors, tools=tools,
                          multimodal=multimodal)

    def fallback_answer(self, task: str, files: Sequence[GeneratedFile], steps: Sequence[AgentStep], *,
                        config: dict[str, Any] | None = None) -> str | None:
        """FallbackAnswer from the steps so far; None when the model's reply is unreadable."""
        try:
            pred = call_predictor(self.fallback, "fallback answer", task=task, files=list_files(files),
                                  steps=render_steps(steps), config=config or {})
        except ModelOutputError:
            return None
        return answer_text(pred.answer) if pred.answer is not None else None
