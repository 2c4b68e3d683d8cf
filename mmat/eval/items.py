"""What every benchmark loader produces: one ``EvalItem`` per question, plus a report of what was skipped.

Loaders normalise three formats (GTA, GAIA, mmat's own eval split) into one shape so that the scorers and
the runner never look at a benchmark's raw layout. A malformed item is skipped and reported, never fatal:
a benchmark file with one broken row must still evaluate the other 228.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AnswerKind", "EvalItem", "LoadReport", "SkippedItem"]

# How an item's answer is scored:
#   whitelist  - GTA objective item: {"whitelist": [[aliases...], ...], "blacklist": [[...]] | None}
#   subjective - GTA subjective item: a list of reference texts (GTA scores these by embedding similarity;
#                mmat does not count them in AnsAcc)
#   gaia       - a single reference string, scored by the GAIA normalised scorer (also GAIA-style store tasks)
#   judged     - Agent-X's data.json: a reference answer only an LLM judge scores (the Agent-X metrics)
#   none       - no textual answer to score (GTA image generation, GAIA test split with hidden answers)
AnswerKind = Literal["whitelist", "subjective", "gaia", "judged", "none"]


class BenchCall(BaseModel):
    """One tool call of the reference solution, in the benchmark's own tool names (GTA's 14)."""

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    output: str | None = Field(None, description="What the tool returned in the reference (Agent-X, GTA dialogs).")


class ReferenceStep(BaseModel):
    """One step of a reference solution as the Agent-X judge sees it."""

    model_config = ConfigDict(frozen=True)

    step: int
    task: str = ""
    tool: str = ""
    input: Any = None
    output: Any = None
    thought: str = ""


class EvalItem(BaseModel):
    """One benchmark question, ready for an agent: question text, input files on disk, gold references."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Item key, unique within its benchmark (GTA '0'..'228', GAIA task_id, mmat task_id).")
    question: str = Field(description="The text the agent is asked (GTA: the first user message).")
    files: list[Path] = Field(default_factory=list, description="Input files, resolved and existing.")
    file_names: list[str] = Field(
        default_factory=list,
        description="Names the agent should see for `files`, same order (defaults to each path's name; store "
        "blobs are content-addressed, so their task-given names live here).",
    )
    tools: list[str] = Field(
        default_factory=list,
        description="mmat tool names the benchmark makes available for this item; empty means the agent's default set.",
    )
    gold_tool_calls: list[str] = Field(
        default_factory=list, description="mmat tool names the reference solution called, in order."
    )
    tool_gold_known: bool = Field(
        True, description="False when the benchmark has no reference tool calls (GAIA): ToolAcc is not computed."
    )
    gt: Any = Field(None, description="The raw reference answer as the benchmark stores it.")
    level: str | None = Field(None, description="Difficulty level (GAIA '1'..'3'); None when the benchmark has none.")
    answer_kind: AnswerKind = Field(description="Which AnsAcc rule applies (see AnswerKind).")
    bench_calls: list[BenchCall] = Field(
        default_factory=list, description="The reference tool calls in the benchmark's names, with arguments (GTA, Agent-X)."
    )
    query_type: str | None = Field(None, description="Agent-X: 'objective' or 'subjective' (how G_acc is judged).")
    generative: bool = Field(False, description="Agent-X: the answer is an image (a 'generative' id; G_a* counts these).")
    reference_steps: list[ReferenceStep] = Field(default_factory=list, description="Agent-X: the reference reasoning steps.")
    reference_answer: str | None = Field(None, description="Agent-X: the reference final answer (value and justification).")
    tool_metadata: list[dict[str, Any]] = Field(
        default_factory=list, description="Agent-X: the reference's tool descriptions, shown to the judge only (never the agent)."
    )
    media_notes: list[str] = Field(
        default_factory=list, description="How input media were prepared (sniffed types, video frames), recorded with the item."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_file_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("file_names") and data.get("files"):
            data = {**data, "file_names": [Path(p).name for p in data["files"]]}
        return data

    @model_validator(mode="after")
    def _one_name_per_file(self) -> "EvalItem":
        if len(self.file_names) != len(self.files):
            raise ValueError(f"file_names has {len(self.file_names)} names for {len(self.files)} files")
        return self


class SkippedItem(BaseModel):
    """An item a loader could not use, and why (shown to the user; the run goes on without it)."""

    key: str
    reason: str


class LoadReport(BaseModel):
    """A loader's result: the usable items, the skipped ones with reasons, and tool names mmat lacks."""

    source: str = Field(description="The file (or store split) the items came from.")
    items: list[EvalItem] = Field(default_factory=list)
    skipped: list[SkippedItem] = Field(default_factory=list)
    unknown_tools: dict[str, list[str]] = Field(
        default_factory=dict, description="Benchmark tool name -> keys of items naming it, for names with no mmat tool."
    )

    def summary(self) -> str:
        """One line for the CLI: how many items loaded, how many were skipped, which tools have no mmat match."""
        line = f"{self.source}: {len(self.items)} items loaded, {len(self.skipped)} skipped"
        if self.unknown_tools:
            names = ", ".join(f"{name} ({len(keys)} items)" for name, keys in sorted(self.unknown_tools.items()))
            line += f"; benchmark tools with no mmat equivalent: {names}"
        return line
