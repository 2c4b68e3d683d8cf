"""A tool of your own: MMAT_PLUGINS=custom_tool PYTHONPATH=examples mmat synth --tools word_count"""
from typing import Annotated

from mmat.tools import tool


@tool(returns="the number of words, as text")
def word_count(text: Annotated[str, "Any text, e.g. a line read from a file."]) -> str:
    """Count the words in a text (runs on the host, called from the agent's code)."""


@word_count.backend("python")
def _count(ctx, text: str) -> str:
    return str(len(text.split()))
