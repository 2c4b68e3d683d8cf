"""QueryGenerator: the teacher writes several task specs for one domain, tool set and example list.

The signature asks for tool names from the list; the module holds the model to it. Each named tool is
validated against a Literal of the tools actually offered: unknown names are dropped and counted, and a
spec left with no valid tool is rejected (with its reason: a rejected task is data too).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError, create_model

from mmat.programs._calls import call_predictor, mark, stage_signature
from mmat.signatures.queries import MAX_QUERIES, MAX_TOOLS_PER_QUERY, GenerateQueries, QuerySpec, SeedExample

__all__ = ["QueryGenerator", "QueryGenResult", "SpecRejection", "validate_specs"]

class SpecRejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    reason: str


class QueryGenResult(BaseModel):
    """The accepted specs, the rejected ones with reasons, and how many tool names were invalid."""

    model_config = ConfigDict(extra="forbid")

    specs: list[QuerySpec]
    rejected: list[SpecRejection] = []
    n_invalid_tools: int = 0
    invalid_tools: list[str] = []


@functools.lru_cache(maxsize=64)
def spec_model_for(tools: tuple[str, ...]) -> type[QuerySpec]:
    """QuerySpec whose intended_tools may only name ``tools``: the JSON schema sent to the model carries the
    enum, so a schema-constrained model (the embedded teacher) cannot invent tool names at all."""
    field = QuerySpec.model_fields["intended_tools"]
    names = Literal[tools]  # type: ignore[valid-type]
    return create_model(
        "QuerySpec", __base__=QuerySpec,
        intended_tools=(list[names], Field(min_length=1, max_length=MAX_TOOLS_PER_QUERY, description=field.description)),
    )


@functools.lru_cache(maxsize=64)
def spec_list_for(tools: tuple[str, ...], n: int) -> type[RootModel]:
    """A list of ``spec_model_for(tools)`` whose JSON schema says ``maxItems: n`` — as a type of its own,
    because DSPy builds the response schema from the field's type and drops Field metadata. Only the schema
    carries the bound (a constrained decoder stops after n specs); parsing keeps any surplus for
    validate_specs to drop and count."""
    return type(f"QuerySpecs{n}", (RootModel[list[spec_model_for(tools)]],),
                {"model_config": ConfigDict(json_schema_extra={"maxItems": n}), "__module__": __name__})


def _tool_literal(tools: Sequence[str]) -> TypeAdapter:
    from mmat.tools import final_tool_names

    names = tuple(dict.fromkeys([*tools, *final_tool_names()]))  # the final tool is always offered
    return TypeAdapter(Literal[names])  # type: ignore[valid-type]


def validate_specs(specs: Sequence[QuerySpec], tools: Sequence[str], *, limit: int = MAX_QUERIES) -> QueryGenResult:
    """Hold specs to the offered tools: drop unknown tool names (counted), reject specs left without a tool,
    exact duplicate queries, and specs beyond ``limit``. The tool that ends a run (``final_answer``) is
    accepted but never kept as an intended tool."""
    from mmat.tools import is_final

    check = _tool_literal(tools)
    kept: list[QuerySpec] = []
    rejected: list[SpecRejection] = []
    invalid: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        valid: list[str] = []
        for name in spec.intended_tools:
            try:
                name = check.validate_python(name.strip())
            except ValidationError:
                invalid.append(name)
                continue
            if not is_final(name) and name not in valid:
                valid.append(name)
        key = " ".join(spec.query.lower().split())
        if not valid:
            rejected.append(SpecRejection(query=spec.query, reason="names no tool from the offered tools"))
        elif key in seen:
            rejected.append(SpecRejection(query=spec.query, reason="duplicate of another query in the same batch"))
        elif len(kept) >= limit:
            rejected.append(SpecRejection(query=spec.query, reason=f"more than the {limit} queries asked for"))
        else:
            seen.add(key)
            kept.append(spec.model_copy(update={"intended_tools": valid}))
    return QueryGenResult(specs=kept, rejected=rejected, n_invalid_tools=len(invalid), invalid_tools=invalid)


class QueryGenerator(dspy.Module):
    """Domain + tools + examples -> validated QuerySpecs (one teacher call)."""

    _mmat_name = "query_generator"

    def __init__(self, n_queries: int = 3, *, signature: type[GenerateQueries] | None = None):
        super().__init__()
        if not 1 <= n_queries <= MAX_QUERIES:
            raise ValueError(f"n_queries must be between 1 and {MAX_QUERIES}, got {n_queries}")
        self.n_queries = n_queries
        self.generate = mark(dspy.Predict(stage_signature(signature, GenerateQueries)), "query_generator.generate")

    def forward(
        self,
        domain: str,
        tools: Sequence[str],
        examples: Sequence[SeedExample],
        *,
        tool_descriptions: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> QueryGenResult:
        if tool_descriptions is None:
            from mmat.tools import describe_tools

            tool_descriptions = describe_tools(tools)
        extra: dict[str, Any] = {}
        if isinstance(dspy.settings.adapter, dspy.JSONAdapter):
            # Schema-constrained models (the JSON adapter is what local models run with) get the tool enum in
            # the schema, so they cannot invent names. Free-text models keep plain strings: one bad name
            # there would fail the whole parse, while validate_specs drops just that name and counts it.
            # maxItems = the count asked for, in the schema only: a constrained decoder stops after n specs instead
            # of copying the examples until the token limit (the embedded 135M did); parsing stays lenient and
            # validate_specs drops any surplus a free model writes.
            from mmat.tools import without_final

            offered = tuple(dict.fromkeys(without_final(tools)))
            extra["signature"] = self.generate.signature.with_updated_fields(
                "queries", type_=spec_list_for(offered, self.n_queries))
        pred = call_predictor(
            self.generate,
            "query generation",
            **extra,  # a per-call signature: the shared predictor (compiled instructions, demos) is untouched
            domain=domain,
            tools=tool_descriptions,
            examples=list(examples),
            n_queries=self.n_queries,
            config=config or {},
        )
        queries = pred.queries.root if isinstance(pred.queries, RootModel) else pred.queries
        specs = [QuerySpec.model_validate(s.model_dump()) for s in queries or []]
        return validate_specs(specs, tools, limit=self.n_queries)
