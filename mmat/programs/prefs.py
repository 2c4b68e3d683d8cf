"""Step-level preferences (MATRIX Pref-X style): StepSampler, StepJudge and the pairing rule.

StepSampler walks a verified trajectory with one sandbox. At each state (after steps[:i]) it asks the
agent's own step predictor for k alternative next steps, with the agent's own prompt, runs each in a
fork of the sandbox (so every candidate sees exactly the state the original step saw), then replays
the original step to move on. The original step is candidate 0: it is known to lead to a verified
answer. StepJudge scores the candidates; :func:`preference_pairs` turns scores and outcomes into
(chosen, rejected) pairs.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict

from mmat.errors import ModelOutputError
from mmat.programs._calls import active_lm, call_predictor, lm_is_multimodal, mark, strip_code_fences
from mmat.programs.agent import CodeAgent, stage_files
from mmat.programs.files import GeneratedFile, image_files, list_files
from mmat.programs.trajectory import AgentStep, render_steps
from mmat.signatures.images import Images
from mmat.signatures.prefs import MAX_CANDIDATES, CandidateStep, JudgeSteps

__all__ = ["StepSampler", "StepCandidates", "StepJudge", "StepRanking", "PreferencePair", "preference_pairs"]


class StepCandidates(BaseModel):
    """Candidates for the step at ``step_idx`` (context: the trajectory's steps before it)."""

    model_config = ConfigDict(extra="forbid")

    step_idx: int
    candidates: list[AgentStep]
    sources: list[Literal["original", "sampled"]]


class StepRanking(BaseModel):
    """The judge's scores, one per candidate in candidate order, and the order best-first."""

    model_config = ConfigDict(extra="forbid")

    scores: list[float]
    reasons: list[str]
    order: list[int]


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


class StepSampler(dspy.Module):
    """Alternative next steps at every state of a trajectory, each run in a forked sandbox."""

    _mmat_name = "step_sampler"

    def __init__(self, agent: CodeAgent, *, k: int = 3, temperature: float = 1.0):
        super().__init__()
        if not 1 <= k < MAX_CANDIDATES:
            raise ValueError(f"k must be between 1 and {MAX_CANDIDATES - 1} (the original step is a candidate too), got {k}")
        self.agent = agent
        self.k = k
        self.temperature = temperature

    def forward(self, task: str, files: Sequence[GeneratedFile], steps: Sequence[AgentStep], workspace: Path, *,
                tools: Sequence[str] | None = None, step_indices: Sequence[int] | None = None) -> list[StepCandidates]:
        tools = list(tools) if tools is not None else self.agent.tools
        wanted = set(range(len(steps)) if step_indices is None else step_indices)
        workspace = Path(workspace)
        files = stage_files(files, workspace)
        multimodal = self.agent.is_multimodal()
        out: list[StepCandidates] = []
        with self.agent.open_sandbox(workspace, files, tools) as sandbox:
            for i, original in enumerate(steps):
                if i in wanted:
                    out.append(self._sample_at(i, task, files, steps, sandbox, tools, multimodal))
                sandbox.run(strip_code_fences(original.code))  # advance to the state after the original step
        return out

    def _sample_at(self, i, task, files, steps, sandbox, tools, multimodal) -> StepCandidates:
        candidates, sources = [steps[i]], ["original"]
        for r in range(self.k):
            config = {"rollout_id": 1 + r, "temperature": self.temperature}
            try:
                thought, code = self.agent.propose(task, files, steps[:i], tools=tools, multimodal=multimodal, config=config)
            except ModelOutputError as e:
                candidates.append(AgentStep(idx=i, observation="unreadable reply", error=f"ModelOutputError: {e}"))
                sources.append("sampled")
                continue
            if any(_same_code(code, c.code) for c in candidates):
                continue
            where = Path(sandbox.workspace)
            fork_dir = where.parent / f"{where.name}.fork-{i}-{r}"
            fork_dir.mkdir()
            try:
                with sandbox.fork(fork_dir, tools=self.agent.tool_host(fork_dir, files, tools)) as fork:
                    step = CodeAgent.execute(fork, i, thought, code, fork_dir)
            finally:
                shutil.rmtree(fork_dir, ignore_errors=True)
            # the fork's workspace is gone: its images are named in the observation, not kept
            candidates.append(step.model_copy(update={"images": []}))
            sources.append("sampled")
        return StepCandidates(step_idx=i, candidates=candidates, sources=sources)


class StepJudge(dspy.Module):
    """Scores candidate steps at one state (JudgeSteps); every candidate must get exactly one score."""

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
        views = [CandidateStep(thought=c.thought, code=c.code, observation=c.observation, error=c.error) for c in candidates]
        pred = call_predictor(self.judge, "step judging", task=task, files=list_files(files),
                              steps_so_far=render_steps(steps_so_far), candidates=views, config=config or {}, **inputs)
        scores: dict[int, tuple[float, str]] = {}
        for j in pred.judgements or []:
            if 0 <= j.candidate < len(candidates) and j.candidate not in scores:
                scores[j.candidate] = (j.score, j.reason)
        missing = [i for i in range(len(candidates)) if i not in scores]
        if missing:
            raise ModelOutputError(f"step judging: no score for candidate(s) {missing}; the judge must score every candidate")
        ordered = [scores[i] for i in range(len(candidates))]
        order = sorted(range(len(candidates)), key=lambda i: (-ordered[i][0], i))
        return StepRanking(scores=[s for s, _ in ordered], reasons=[r for _, r in ordered], order=order)


def preference_pairs(sample: StepCandidates, ranking: StepRanking, *, min_margin: float = 0.2) -> list[PreferencePair]:
    """Pairs for one state: the best error-free candidate against every candidate that failed
    (rule ``format`` for an unreadable reply, ``error`` for code that raised), and against the
    lowest-scored error-free candidate when the judge's scores differ by at least ``min_margin``."""
    cands, scores = sample.candidates, ranking.scores
    clean = [i for i in ranking.order if cands[i].error is None and cands[i].code.strip()]
    if not clean:
        return []
    best = clean[0]
    pairs = []
    for i, c in enumerate(cands):
        if c.error is None:
            continue
        rule = "format" if c.error.startswith("ModelOutputError") else "error"
        pairs.append(PreferencePair(step_idx=sample.step_idx, chosen=best, rejected=i, chosen_score=scores[best],
                                    rejected_score=scores[i], rule=rule))
    worst = clean[-1]
    if worst != best and scores[best] - scores[worst] >= min_margin:
        pairs.append(PreferencePair(step_idx=sample.step_idx, chosen=best, rejected=worst, chosen_score=scores[best],
                                    rejected_score=scores[worst], rule="margin"))
    return pairs
