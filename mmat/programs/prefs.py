"""Step-level preferences (MATRIX Pref-X style): StepSampler, StepJudge, the pairing rule, and
PreferenceWalk, which composes them into one trajectory.

PreferenceWalk runs a task the way CodeAgent does (same prompt, step budget, error tolerance and
fallback answer), but at each state StepSampler asks the controller for k candidate next steps (the
first greedy, the rest sampled) and runs each in its own fork of the sandbox; StepJudge scores them
with their observations; :func:`preference_pairs` turns scores and outcomes into (chosen, rejected)
pairs; and the walk goes on with the winner, run in the main sandbox. The walk's steps are a
trajectory, so every pair's context (the steps before it) can be stored and rebuilt exactly.

Given a verified reference trajectory, its step competes as one more candidate for as long as the walk
has followed it: a weak controller then still meets a known-good step, and a strong one can beat it
and take the walk elsewhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict

from mmat.errors import ModelOutputError
from mmat.programs._calls import active_lm, call_predictor, lm_is_multimodal, mark
from mmat.programs.agent import CodeAgent, stage_files, unreadable_step
from mmat.programs.files import GeneratedFile, image_files, list_files
from mmat.programs.trajectory import AgentStep, Trajectory, render_steps
from mmat.signatures.images import Images
from mmat.signatures.prefs import MAX_CANDIDATES, CandidateStep, JudgeSteps, judgements_model

__all__ = [
    "StepSampler", "StepCandidates", "StepJudge", "StepRanking", "PreferencePair", "preference_pairs", "best_candidate", "outcome",
    "PreferenceWalk", "JudgedState", "WalkResult",
]


Source = Literal["reference", "sampled"]


class StepCandidates(BaseModel):
    """Distinct candidates for the step at ``step_idx``, each with what running it in a fork gave."""

    model_config = ConfigDict(extra="forbid")

    step_idx: int
    candidates: list[AgentStep]
    sources: list[Source]


class StepRanking(BaseModel):
    """The judge's scores, one per candidate in candidate order, and the order best-first."""

    model_config = ConfigDict(extra="forbid")

    scores: list[float]
    reasons: list[str]
    order: list[int]

    @classmethod
    def from_scores(cls, scores: Sequence[float], reasons: Sequence[str]) -> StepRanking:
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # ties: the earlier (greedier) candidate
        return cls(scores=list(scores), reasons=list(reasons), order=order)


class PreferencePair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_idx: int
    chosen: int
    rejected: int
    chosen_score: float
    rejected_score: float
    rule: Literal["error", "format", "margin"]


def _same_code(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


# Errors that mean the reply was not a step in the action format at all: no readable reply, or prose
# in place of Python (smolagents calls these parsing errors, apart from errors raised while running).
_NOT_CODE = ("ModelOutputError", "SyntaxError", "IndentationError", "TabError")
_OUTCOME_RANK = {"clean": 0, "error": 1, "format": 2}


def outcome(step: AgentStep) -> Literal["clean", "error", "format"]:
    """``clean``: ran without error; ``error``: Python that raised; ``format``: not Python, or no readable reply."""
    if not step.code.strip() or (step.error is not None and step.error.startswith(_NOT_CODE)):
        return "format"
    return "clean" if step.error is None else "error"


class StepSampler(dspy.Module):
    """k candidate next steps from one state, each run in its own fork of the sandbox.

    Candidate 0 is the controller's greedy answer (temperature 0); the others are sampled at
    ``temperature`` with distinct ``rollout_id``s, so DSPy's cache cannot hand back the same reply.
    A candidate whose code repeats an earlier one is dropped: it would only duplicate a pair.
    """

    _mmat_name = "step_sampler"

    def __init__(self, agent: CodeAgent, *, k: int = 3, temperature: float = 1.0):
        super().__init__()
        if not 1 <= k < MAX_CANDIDATES:  # a reference step may make one more
            raise ValueError(f"k must be between 1 and {MAX_CANDIDATES - 1}, got {k}")
        self.agent = agent
        self.k = k
        self.temperature = temperature

    def forward(self, task: str, files: Sequence[GeneratedFile], steps: Sequence[AgentStep], sandbox: Any, *,
                tools: Sequence[str], multimodal: bool, reference: AgentStep | None = None) -> StepCandidates:
        """``sandbox`` holds the state after ``steps``; it is forked per candidate and left as it was.
        ``reference`` (a verified trajectory's step from this state) runs first, as candidate 0."""
        i = len(steps)
        candidates: list[AgentStep] = []
        if reference is not None and reference.code:
            candidates.append(self._run_in_fork(sandbox, i, "ref", reference.thought, reference.code, files, tools))
        n_reference = len(candidates)
        for r in range(self.k):
            config = {"temperature": 0.0} if r == 0 else {"rollout_id": r, "temperature": self.temperature}
            try:
                thought, code = self.agent.propose(task, files, steps, tools=tools, multimodal=multimodal, config=config)
            except ModelOutputError as e:
                if not any(c.error and c.error.startswith("ModelOutputError") for c in candidates):
                    candidates.append(unreadable_step(i, e))  # one unreadable candidate is enough for a format pair
                continue
            if any(_same_code(code, c.code) for c in candidates if c.code):
                continue
            candidates.append(self._run_in_fork(sandbox, i, r, thought, code, files, tools))
        return StepCandidates(step_idx=i, candidates=candidates,
                              sources=["reference"] * n_reference + ["sampled"] * (len(candidates) - n_reference))

    def _run_in_fork(self, sandbox: Any, i: int, r: int | str, thought: str, code: str, files: Sequence[GeneratedFile],
                     tools: Sequence[str]) -> AgentStep:
        where = Path(sandbox.workspace)
        fork_dir = where.parent / f"{where.name}.fork-{i}-{r}"
        fork_dir.mkdir()
        try:
            with sandbox.fork(fork_dir, tools=self.agent.tool_host(fork_dir, files, tools)) as fork:
                step = CodeAgent.execute(fork, i, thought, code, fork_dir)
        finally:
            shutil.rmtree(fork_dir, ignore_errors=True)
            shutil.rmtree(where.parent / f"{fork_dir.name}.images", ignore_errors=True)  # its step images' copies
        # the fork's workspace is gone: its images are named in the observation, not kept
        return step.model_copy(update={"images": []})


class StepJudge(dspy.Module):
    """Scores candidate steps at one state (JudgeSteps); every candidate must get exactly one score.

    Under the JSON adapter (schema-constrained local models) the judgements are asked for as one
    required field per candidate (``judgements_model``), so a small model's decoding cannot skip one;
    other models answer the signature's list and are held to scoring every candidate.
    """

    _mmat_name = "step_judge"

    def __init__(self, *, multimodal: bool | None = None):
        super().__init__()
        self.multimodal = multimodal
        self.judge = mark(dspy.Predict(JudgeSteps), "step_judge.judge")

    def forward(self, task: str, files: Sequence[GeneratedFile], steps_so_far: Sequence[AgentStep],
                candidates: Sequence[AgentStep], *, config: dict[str, Any] | None = None) -> StepRanking:
        shown = self.multimodal if self.multimodal is not None else lm_is_multimodal(active_lm(self.judge))
        inputs: dict[str, Any] = {}
        images = image_files(files)
        if shown and images:
            inputs["images"] = Images.of([(f.name, f.path) for f in images])
        fixed = isinstance(dspy.settings.adapter, dspy.JSONAdapter)
        if fixed:  # a per-call signature: the shared predictor (compiled instructions, demos) is untouched
            inputs["signature"] = self.judge.signature.with_updated_fields("judgements", type_=judgements_model(len(candidates)))
        views = [CandidateStep(thought=c.thought, code=c.code, observation=c.observation, error=c.error) for c in candidates]
        pred = call_predictor(self.judge, "step judging", task=task, files=list_files(files),
                              steps_so_far=render_steps(steps_so_far), candidates=views, config=config or {}, **inputs)
        if fixed:
            scored = {i: getattr(pred.judgements, f"candidate_{i}") for i in range(len(candidates))}
        else:
            scored = {}
            for j in pred.judgements or []:
                if 0 <= j.candidate < len(candidates) and j.candidate not in scored:
                    scored[j.candidate] = j
        missing = [i for i in range(len(candidates)) if i not in scored]
        if missing:
            raise ModelOutputError(f"step judging: no score for candidate(s) {missing}; the judge must score every candidate")
        return StepRanking.from_scores([scored[i].score for i in range(len(candidates))],
                                       [scored[i].reason for i in range(len(candidates))])


def best_candidate(candidates: Sequence[AgentStep], ranking: StepRanking) -> int:
    """The winner: the judge's best among the candidates that ran cleanly; if none did, among those that
    were Python but raised (the error becomes an observation the next step can react to, as in
    CodeAgent's loop); if none was even that, the judge's best."""
    return min(ranking.order, key=lambda i: _OUTCOME_RANK[outcome(candidates[i])])  # min keeps the judge's order in a tie


def preference_pairs(sample: StepCandidates, ranking: StepRanking, *, min_margin: float = 0.2) -> list[PreferencePair]:
    """Pairs for one state, all with the winner (``best_candidate``) as the chosen side:
    - ``format``: every candidate that was not a step in the action format (unreadable, or not Python),
      whenever the winner was;
    - ``error``: every candidate whose code raised, when the winner ran cleanly;
    - ``margin``: every other clean candidate the judge scored at least ``min_margin`` below the winner."""
    cands, scores = sample.candidates, ranking.scores
    best = best_candidate(cands, ranking)
    kind = outcome(cands[best])

    def pair(rejected: int, rule: str) -> PreferencePair:
        return PreferencePair(step_idx=sample.step_idx, chosen=best, rejected=rejected, chosen_score=scores[best],
                              rejected_score=scores[rejected], rule=rule)

    beaten = {"clean": ("format", "error"), "error": ("format",), "format": ()}[kind]
    pairs = [pair(i, outcome(c)) for i, c in enumerate(cands) if outcome(c) in beaten]
    if kind == "clean":
        clean = [i for i in ranking.order if i != best and outcome(cands[i]) == "clean"]
        pairs += [pair(i, "margin") for i in clean if scores[best] - scores[i] >= min_margin - 1e-9]  # 0.7 - 0.5 < 0.2 in floats
    return pairs


def _reference_step(reference: Sequence[AgentStep] | None, steps: Sequence[AgentStep]) -> AgentStep | None:
    """The reference's next step while the walk has taken exactly the reference's steps so far."""
    if reference is None or len(steps) >= len(reference):
        return None
    on_path = all(_same_code(s.code, r.code) for s, r in zip(steps, reference, strict=False))
    return reference[len(steps)] if on_path else None


class JudgedState(BaseModel):
    """One state of a walk: its candidates, the judge's ranking, the winner the walk went on with, the pairs."""

    model_config = ConfigDict(extra="forbid")

    step_idx: int
    candidates: list[AgentStep]
    sources: list[Source]
    ranking: StepRanking
    winner: int
    pairs: list[PreferencePair]


class WalkResult(BaseModel):
    """The trajectory along the winners (its step i is state i's winner, run in the main sandbox) and every state."""

    model_config = ConfigDict(extra="forbid")

    trajectory: Trajectory
    states: list[JudgedState]


class PreferenceWalk(dspy.Module):
    """Solve a task like CodeAgent, choosing each step among k judged candidates; pairs come from every state.

    The controller is the ambient LM (``dspy.context``); ``judge_context`` holds the judge's ``dspy.context``
    settings (its ``lm`` and ``adapter``) when another model judges.
    """

    _mmat_name = "preference_walk"

    def __init__(self, agent: CodeAgent, *, k: int = 3, temperature: float = 1.0, min_margin: float = 0.2,
                 judge_context: dict[str, Any] | None = None):
        super().__init__()
        self.agent = agent
        self.sampler = StepSampler(agent, k=k, temperature=temperature)
        self.judge = StepJudge()
        self.min_margin = min_margin
        self.judge_context = dict(judge_context or {})

    def forward(self, task: str, files: Sequence[GeneratedFile], workspace: Path, *,
                tools: Sequence[str] | None = None, reference: Sequence[AgentStep] | None = None) -> WalkResult:
        """``reference``: a verified trajectory of the task, whose steps compete while the walk follows them."""
        tools = list(tools) if tools is not None else self.agent.tools
        workspace = Path(workspace)
        files = stage_files(files, workspace)
        multimodal = self.agent.is_multimodal()
        states: list[JudgedState] = []

        with self.agent.open_sandbox(workspace, files, tools) as sandbox:
            def judged_step(idx: int, steps: list[AgentStep]) -> AgentStep:
                sample = self.sampler(task, files, list(steps), sandbox, tools=tools, multimodal=multimodal,
                                      reference=_reference_step(reference, steps))
                ranking = self._rank(task, files, steps, sample.candidates)
                winner = best_candidate(sample.candidates, ranking)
                states.append(JudgedState(step_idx=idx, candidates=sample.candidates, sources=sample.sources, ranking=ranking,
                                          winner=winner, pairs=preference_pairs(sample, ranking, min_margin=self.min_margin)))
                chosen = sample.candidates[winner]
                if not chosen.code:  # an unreadable reply: nothing to run, the model is told so
                    return chosen
                return CodeAgent.execute(sandbox, idx, chosen.thought, chosen.code, workspace)

            trajectory = self.agent.run(task, files, sandbox, workspace, tools=tools, multimodal=multimodal,
                                        next_step=judged_step)
        return WalkResult(trajectory=trajectory, states=states)

    def _rank(self, task: str, files: Sequence[GeneratedFile], steps: Sequence[AgentStep],
              candidates: Sequence[AgentStep]) -> StepRanking:
        if len(candidates) == 1:  # nothing to compare: no judge call, no pair
            return StepRanking.from_scores([0.0], ["the only distinct candidate; not judged"])
        with dspy.context(**self.judge_context):  # a judge should not roll dice: greedy decoding
            return self.judge(task, files, steps, candidates, config={"temperature": 0.0})
