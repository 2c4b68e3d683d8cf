"""DSPy programs of the synthesis pipeline. Each stage is a ``dspy.Module`` over typed signatures
(``mmat.signatures``) returning pydantic objects; ``Synthesis`` composes them for one seed. Programs
never touch the store: the runner stores what they return.
"""

from mmat.programs.agent import CodeAgent, stage_files
from mmat.programs.captioner import ImageCaptioner
from mmat.programs.agent_turns import agent_messages, agent_step_inputs, render_tools, trajectory_conversation
from mmat.programs.file_generator import FileAttempt, FileFailure, FileGenerator, FileGenResult, check_file
from mmat.programs.files import GeneratedFile, describe_files, file_name_for, list_files, mime_for
from mmat.programs.prefs import (
    JudgedState,
    PreferencePair,
    PreferenceWalk,
    StepCandidates,
    StepJudge,
    StepRanking,
    StepSampler,
    WalkResult,
    best_candidate,
    preference_pairs,
)
from mmat.programs.query_generator import QueryGenerator, QueryGenResult, SpecRejection, validate_specs
from mmat.programs.seeds import Domain, Seed, load_domains, load_seed_examples, make_seed, make_seeds
from mmat.programs.synthesis import SeedResult, Synthesis, TaskResult, TrajectoryResult
from mmat.programs.trajectory import AgentStep, Trajectory, render_observation, render_steps
from mmat.programs.verifiers import QueryFileVerifier, TrajectoryVerifier

__all__ = [
    # seeds
    "Domain",
    "Seed",
    "load_domains",
    "load_seed_examples",
    "make_seed",
    "make_seeds",
    # stage 1: queries
    "QueryGenerator",
    "QueryGenResult",
    "SpecRejection",
    "validate_specs",
    # stage 2: files
    "FileGenerator",
    "FileGenResult",
    "FileAttempt",
    "FileFailure",
    "GeneratedFile",
    "check_file",
    "file_name_for",
    "mime_for",
    "list_files",
    "describe_files",
    # stages 3 and 5: verifiers
    "QueryFileVerifier",
    "TrajectoryVerifier",
    # stage 4: agent
    "CodeAgent",
    "AgentStep",
    "Trajectory",
    "stage_files",
    "render_observation",
    "render_steps",
    "render_tools",
    "agent_step_inputs",
    "agent_messages",
    "trajectory_conversation",
    # step preferences
    "StepSampler",
    "StepCandidates",
    "StepJudge",
    "StepRanking",
    "PreferencePair",
    "preference_pairs",
    "best_candidate",
    "PreferenceWalk",
    "JudgedState",
    "WalkResult",
    # pool captions from a multimodal teacher
    "ImageCaptioner",
    # composition
    "Synthesis",
    "SeedResult",
    "TaskResult",
    "TrajectoryResult",
]
