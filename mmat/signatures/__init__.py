"""Typed DSPy signatures, one file per feature. A signature's docstring and field descriptions are the
only prompt text of its step; review them like product copy (golden files in tests/golden/ pin them).

``tools.py`` (the tools' own signatures) belongs to :mod:`mmat.tools` and is imported from there.
"""

from mmat.signatures.agent import CodeAgentStep, FallbackAnswer
from mmat.signatures.agentx import (
    AGENTX_SIGNATURES,
    JudgeContext,
    JudgeFactualPrecision,
    JudgeFaithfulness,
    JudgeGoalAccuracy,
    JudgeGrounding,
    JudgeSemanticAccuracy,
    JudgeToolAccuracy,
    JudgeToolPrecision,
    JudgeToolsetAccuracy,
)
from mmat.signatures.files import FILE_LIBRARIES, CaptionImage, FixFileCode, WriteFileCode
from mmat.signatures.images import ImageRef, Images, image_data_uri
from mmat.signatures.prefs import MAX_CANDIDATES, CandidateJudgement, CandidateStep, JudgeSteps, StepScore, judgements_model
from mmat.signatures.queries import (
    MAX_FILES_PER_QUERY,
    MAX_QUERIES,
    MAX_TOOLS_PER_QUERY,
    AnswerType,
    FileFormat,
    FileNeed,
    GenerateQueries,
    Modality,
    QuerySpec,
    SeedExample,
)
from mmat.signatures.verify import MAX_REASONS, QueryFileVerdict, TrajectoryVerdict, VerifyQueryFiles, VerifyTrajectory

__all__ = [
    # Agent-X judge metrics
    "AGENTX_SIGNATURES",
    "JudgeGrounding",
    "JudgeToolPrecision",
    "JudgeToolAccuracy",
    "JudgeFaithfulness",
    "JudgeContext",
    "JudgeFactualPrecision",
    "JudgeSemanticAccuracy",
    "JudgeGoalAccuracy",
    "JudgeToolsetAccuracy",
    # queries
    "Modality",
    "FileFormat",
    "AnswerType",
    "FileNeed",
    "QuerySpec",
    "SeedExample",
    "GenerateQueries",
    "MAX_QUERIES",
    "MAX_TOOLS_PER_QUERY",
    "MAX_FILES_PER_QUERY",
    # files
    "WriteFileCode",
    "FixFileCode",
    "CaptionImage",
    "FILE_LIBRARIES",
    # images
    "Images",
    "ImageRef",
    "image_data_uri",
    # agent
    "CodeAgentStep",
    "FallbackAnswer",
    # verify
    "VerifyQueryFiles",
    "VerifyTrajectory",
    "QueryFileVerdict",
    "TrajectoryVerdict",
    "MAX_REASONS",
    # prefs
    "JudgeSteps",
    "CandidateStep",
    "CandidateJudgement",
    "StepScore",
    "judgements_model",
    "MAX_CANDIDATES",
]
