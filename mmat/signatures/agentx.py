"""Agent-X's judge metrics, one typed signature per metric (instructions in mmat's own words).

The judge reads the user's query, the benchmark's reference solution (its steps and final answer) and the
agent's steps — for each: the step number, what it set out to do, the tool it used, the tool's output and the
thought behind it — and its final answer. It never sees images. Every signature answers with a
``justification`` first (so the score is given after looking) and a ``score`` between 0 and 1.
"""

from __future__ import annotations

import dspy

__all__ = [
    "JudgeGrounding", "JudgeToolPrecision", "JudgeToolAccuracy", "JudgeFaithfulness", "JudgeContext",
    "JudgeFactualPrecision", "JudgeSemanticAccuracy", "JudgeGoalAccuracy", "JudgeToolsetAccuracy", "AGENTX_SIGNATURES",
]

_QUERY = "The user's request the agent worked on."
_REFERENCE_STEPS = "The benchmark's reference solution, one step per line: step, task, tool, input, output, thought."
_AGENT_STEPS = "The agent's steps, one per line: step, task, tool used, tool output, thought."
_JUSTIFICATION = "Two to four sentences: what you compared and what you found, before the score."
_SCORE = "A number from 0 (worst) to 1 (best); fractions allowed."


class JudgeGrounding(dspy.Signature):
    """Score how well each of the agent's steps is grounded, then average over the reference's steps.

    Compare the agent's steps with the reference steps one by one. A step earns credit when its task is
    relevant to the request, the tool it used suits that task, its output agrees with what the reference
    step obtained, and its thought follows from what was known at that point. A reference step the agent
    skipped, and an agent step with no counterpart in the reference, each score 0. The score is the average
    over the steps."""

    query: str = dspy.InputField(desc=_QUERY)
    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeToolPrecision(dspy.Signature):
    """Score whether the agent picked the right tool at each step.

    For every step, a tool choice is right when it is the tool the reference used for that step, or clearly
    the most suitable tool for what the step had to do. The score is the share of the agent's steps whose
    tool choice is right."""

    query: str = dspy.InputField(desc=_QUERY)
    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeToolAccuracy(dspy.Signature):
    """Score whether the tools the agent called gave usable results.

    For every step that called a tool, check against the tool descriptions that the output has the form the
    tool promises and that it carries meaningful content for the step (not an error, not empty, not
    nonsense). The score is the share of such steps that pass."""

    tool_descriptions: str = dspy.InputField(desc="What each tool takes and returns.")
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeFaithfulness(dspy.Signature):
    """Score whether the agent's plan follows the reference's strategy.

    Look at the order and purpose of the steps as a whole: does the agent gather the same kind of evidence,
    in a sensible order, and reason from it the way the reference does? Different but equally valid wording
    is fine; a plan that goes somewhere else, or jumps to a conclusion, is not."""

    query: str = dspy.InputField(desc=_QUERY)
    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeContext(dspy.Signature):
    """Score whether each step used its inputs correctly.

    For every step, check that the inputs it passed to its tool (file names, regions, texts, numbers) are the
    right ones given the request and the earlier steps' outputs. The score is the share of steps whose inputs
    are used correctly."""

    query: str = dspy.InputField(desc=_QUERY)
    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeFactualPrecision(dspy.Signature):
    """Score how free of invented content the agent's steps are.

    Anything the agent states that no tool output, the request or the reference supports — objects, numbers,
    text, events — counts against it. 1 means nothing is made up; lower the score as invented content grows."""

    query: str = dspy.InputField(desc=_QUERY)
    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeSemanticAccuracy(dspy.Signature):
    """Score whether the agent's reasoning and answer cover what the request asks for.

    List the key parts of the request (what to find, compare, count or explain) and check that the agent's
    steps and final answer address each of them in substance, compared with the reference answer."""

    query: str = dspy.InputField(desc=_QUERY)
    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    reference_answer: str = dspy.InputField(desc="The reference's final answer (and its justification).")
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    agent_answer: str = dspy.InputField(desc="The agent's final answer.")
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeGoalAccuracy(dspy.Signature):
    """Score whether the agent's final answer reaches the goal.

    For an objective request, the answer is right (1) only when it states the reference answer exactly or in a
    clearly equivalent form, else 0. For a subjective request, score how close the answer's content is to the
    reference answer's."""

    query_type: str = dspy.InputField(desc="'objective' (one right answer) or 'subjective' (judged similarity).")
    reference_answer: str = dspy.InputField(desc="The reference's final answer (and its justification).")
    agent_answer: str = dspy.InputField(desc="The agent's final answer.")
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


class JudgeToolsetAccuracy(dspy.Signature):
    """Score how well the set of tools the agent used matches the set the reference used.

    Ignore order and repeats. With R the reference's tools and A the agent's, precision is the share of A in R
    and recall the share of R in A; the score is their F1 (0 when either set is empty and the other is not,
    1 when both are empty)."""

    reference_steps: str = dspy.InputField(desc=_REFERENCE_STEPS)
    agent_steps: str = dspy.InputField(desc=_AGENT_STEPS)
    justification: str = dspy.OutputField(desc=_JUSTIFICATION)
    score: float = dspy.OutputField(desc=_SCORE)


# metric key -> signature, in the paper's column order (G_a* is derived, not judged)
AGENTX_SIGNATURES: dict[str, type[dspy.Signature]] = {
    "G_s": JudgeGrounding,
    "T_p": JudgeToolPrecision,
    "T_acc": JudgeToolAccuracy,
    "F_acc": JudgeFaithfulness,
    "C_s": JudgeContext,
    "F_p": JudgeFactualPrecision,
    "S_acc": JudgeSemanticAccuracy,
    "G_acc": JudgeGoalAccuracy,
    "Ts_acc": JudgeToolsetAccuracy,
}
