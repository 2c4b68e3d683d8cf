"""Replace a stage's prompt: subclass its signature (same typed fields, your instructions) and pass it in.

    from examples.custom_signature import kitchen_synthesis
    program = kitchen_synthesis(pool, settings)      # then program(seed, workspace), or run_synth(...)
"""
from mmat.programs import QueryGenerator, Synthesis
from mmat.signatures.queries import GenerateQueries


class KitchenQueries(GenerateQueries):
    """Write requests a home cook would send to an AI assistant that can look at photos and read recipe files.
    Each request must need at least one of the offered tools and every file it mentions."""


def kitchen_synthesis(pool, settings, **kwargs) -> Synthesis:
    return Synthesis(pool, settings=settings, query_generator=QueryGenerator(3, signature=KitchenQueries), **kwargs)
