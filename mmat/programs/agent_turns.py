"""The code agent's turns: one function builds the inputs of every step, so the prompt the model saw
at inference and the conversation finetuning trains on are the same by construction.

Turn 0 (user) holds the task, the file list, the tools and the task's images; each assistant turn is a
step's thought and code; each later user turn is the previous step's observation and the images it
produced. Earlier turns travel in ``CodeAgentStep.history`` (a ``dspy.History``), so the messages
of step n are a prefix of the messages of step n+1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from mmat.programs.files import GeneratedFile, image_files, list_files
from mmat.programs.trajectory import AgentStep
from mmat.signatures.agent import CodeAgentStep
from mmat.signatures.images import Images

__all__ = ["render_tools", "agent_step_inputs", "agent_messages", "trajectory_conversation", "MAX_STEP_IMAGES"]

MAX_STEP_IMAGES = 3  # images shown per turn (MAT drops trajectories with more than 3 images)


def render_tools(tools: Sequence[str]) -> str:
    """The tool list of the agent's first turn (final_answer is always listed)."""
    from mmat.tools import describe_tools

    return describe_tools(list(tools))


def _first_turn(task: str, files: Sequence[GeneratedFile], tools_text: str, multimodal: bool, inline: bool) -> dict[str, Any]:
    turn: dict[str, Any] = {"task": task, "files": list_files(files), "tools": tools_text}
    images = image_files(files)[:MAX_STEP_IMAGES]
    if multimodal and images:
        turn["images"] = Images.of([(f.name, f.path) for f in images], inline=inline)
    return turn


def _later_turn(step: AgentStep, multimodal: bool, inline: bool) -> dict[str, Any]:
    turn: dict[str, Any] = {"observation": step.observation}
    if multimodal and step.images:
        turn["images"] = Images.of([(None, p) for p in step.images[:MAX_STEP_IMAGES]], inline=inline)
    return turn


def agent_step_inputs(
    task: str,
    files: Sequence[GeneratedFile],
    tools_text: str,
    steps: Sequence[AgentStep],
    *,
    multimodal: bool,
    inline_images: bool = True,
) -> dict[str, Any]:
    """CodeAgentStep inputs for the step that follows ``steps`` (history + the new user turn)."""
    turns = [_first_turn(task, files, tools_text, multimodal, inline_images)]
    turns += [_later_turn(s, multimodal, inline_images) for s in steps]
    history = [{**turns[i], "thought": s.thought, "code": s.code} for i, s in enumerate(steps)]
    return {"history": dspy.History(messages=history), **turns[len(steps)]}


def _adapter(adapter: Any) -> Any:
    return adapter or dspy.settings.adapter or dspy.ChatAdapter()


def agent_messages(
    task: str,
    files: Sequence[GeneratedFile],
    steps: Sequence[AgentStep],
    tools: Sequence[str],
    adapter: Any = None,
    *,
    multimodal: bool,
    inline_images: bool = True,
    signature: type[dspy.Signature] = CodeAgentStep,
    demos: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The messages DSPy sends for the step after ``steps`` (system, demos, earlier turns, new user turn)."""
    inputs = agent_step_inputs(task, files, render_tools(tools), steps, multimodal=multimodal, inline_images=inline_images)
    return _adapter(adapter).format(signature, list(demos), inputs)


def trajectory_conversation(
    task: str,
    files: Sequence[GeneratedFile],
    steps: Sequence[AgentStep],
    tools: Sequence[str],
    adapter: Any = None,
    *,
    multimodal: bool = True,
    inline_images: bool = False,
    signature: type[dspy.Signature] = CodeAgentStep,
    demos: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """OpenAI-format messages of a whole trajectory: the conversation of its last step plus that step's
    answer as the final assistant message (rendered by the same adapter).

    Images are ``image_url`` parts in order; with ``inline_images=False`` (the default, for training
    data) their url is the file path, with True the data URI the model received. ``tools`` are names;
    ``multimodal``, ``signature`` and ``demos`` must be what the agent ran with (``agent.step.signature``,
    ``agent.step.demos`` for a compiled agent).
    """
    if not steps:
        raise ValueError("a trajectory without steps has no conversation")
    adapter = _adapter(adapter)
    messages = agent_messages(
        task, files, steps[:-1], tools, adapter, multimodal=multimodal, inline_images=inline_images,
        signature=signature, demos=demos,
    )
    last = steps[-1]
    reply = adapter.format_assistant_message_content(signature, {"thought": last.thought, "code": last.code})
    return [*messages, {"role": "assistant", "content": reply}]
