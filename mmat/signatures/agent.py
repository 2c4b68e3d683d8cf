"""The code agent's step and its fallback answer.

``CodeAgentStep`` is built so that the messages of step n are a prefix of the messages of step n+1:
earlier steps travel in the ``history`` field and DSPy renders them as alternating user/assistant
turns. The first turn carries ``task``, ``files``, ``tools`` and the task's ``images``; every later turn
carries the previous step's ``observation`` and the ``images`` it produced. Finetuning trains on exactly
this conversation (:func:`mmat.programs.trajectory_conversation` rebuilds it from stored steps).
"""

from __future__ import annotations

import dspy

from mmat.signatures.images import Images

__all__ = ["CodeAgentStep", "FallbackAnswer"]


class CodeAgentStep(dspy.Signature):
    """You are an assistant that solves the user's task by writing Python code, one step at a time.

    At each step, first explain in `thought` what you will do next and why, then write the Python `code` for
    that step. The code runs in a persistent Python session: variables and imports stay defined between steps.
    The task's files are in the current directory. Call tools as Python functions with keyword arguments,
    exactly as listed. Only what your code prints, the tools' results and errors come back to you as the next
    observation, so print() what you need to see, and never guess what a tool returned. Do a few actions per
    step, check their results, and if a step fails, read the error and change the code instead of repeating it.
    When you know the answer, call final_answer(answer) with the answer alone: a number, a name, a short text,
    or the path of the file you produced."""

    history: dspy.History = dspy.InputField(desc="The earlier steps of this task.")
    task: str | None = dspy.InputField(desc="The user's task.")
    files: str | None = dspy.InputField(desc="The files attached to the task, in the current directory.")
    tools: str | None = dspy.InputField(desc="The tools your code can call.")
    images: Images | None = dspy.InputField(desc="The task's images (first step) or the images your last step produced.")
    observation: str | None = dspy.InputField(desc="What your last step's code printed, returned or raised.")
    thought: str = dspy.OutputField(desc="Your reasoning for this step, in a few sentences.")
    code: str = dspy.OutputField(desc="The Python code to run for this step, without markdown fences.")


class FallbackAnswer(dspy.Signature):
    """An assistant tried to solve the task with code but stopped before calling final_answer.

    From the task and what its steps found, give the best final answer now: the answer alone, as
    final_answer would have received it (a number, a name, a short text or a file path). Prefer facts the
    observations established; if they establish nothing, give your best short answer from general knowledge."""

    task: str = dspy.InputField(desc="The user's task.")
    files: str = dspy.InputField(desc="The files attached to the task.")
    steps: str = dspy.InputField(desc="Each step's thought, code and observation, in order.")
    answer: str = dspy.OutputField(desc="The final answer alone.")
