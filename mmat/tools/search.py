"""``ask_search_agent``: answer a search query from one of three pluggable backends.

``settings.search_backend`` picks: ``bm25`` searches a local corpus (``settings.search_corpus`` or
the small corpus bundled with mmat); ``simulated`` lets the text model answer and labels every
observation ``[simulated search]`` so no one mistakes it for retrieved text; ``web`` calls a search
API when a key is configured. ``auto`` uses the web when a key is set, otherwise bm25.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

from mmat.errors import ConfigError
from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolArgumentError
from mmat.tools.registry import ToolEnv, tool
from mmat.tools.search_index import BUNDLED_CORPUS, corpus_files, get_index
from mmat.tools.search_web import WEB_PROVIDERS, configured_provider, web_search

__all__ = ["ask_search_agent", "SEARCH_BACKENDS", "SIMULATED_LABEL", "corpus_root"]

SEARCH_BACKENDS = ("auto", "bm25", "simulated", "web")
SIMULATED_LABEL = "[simulated search]"
TOP_K = 3
SNIPPET_CHARS = 700


@tool(returns="the most relevant passages found, each with its title and source, or a note that nothing matched")
def ask_search_agent(query: Annotated[str, "What to look up, as a question or keywords, e.g. 'boiling point of water at sea level'."]) -> str:
    """Search for information you do not know: facts, definitions, how things work, figures and dates."""


@ask_search_agent.selector
def _select(env: ToolEnv) -> list[str]:
    choice = env.settings.search_backend
    if choice not in SEARCH_BACKENDS:
        raise ConfigError(
            f"search_backend must be one of {', '.join(SEARCH_BACKENDS)} (got {choice!r}): "
            "fix MMAT_SEARCH_BACKEND, mmat.toml or the flag"
        )
    return ["web", "bm25"] if choice == "auto" else [choice]


def corpus_root(env: ToolEnv) -> Path:
    return Path(env.settings.search_corpus) if env.settings.search_corpus else BUNDLED_CORPUS


def bm25_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("bm25s") is None or importlib.util.find_spec("Stemmer") is None:
        return False, "bm25s and PyStemmer are not installed: pip install bm25s==0.3.16 PyStemmer"
    root = corpus_root(env)
    if not root.is_dir():
        return False, f"search_corpus {root} is not a directory: point MMAT_SEARCH_CORPUS at a folder of .md/.txt files"
    n = len(corpus_files(root))
    if n == 0:
        return False, f"search_corpus {root} holds no .md/.txt files"
    which = "the bundled mmat corpus" if root == BUNDLED_CORPUS else str(root)
    return True, f"BM25 over {which} ({n} files)"


def simulated_status(env: ToolEnv) -> tuple[bool, str]:
    if env.lm_name is None:
        return False, "needs a text model: give the tool host an lm (the teacher) to simulate search answers"
    return True, f"answered by the text model ({env.lm_name}) from its own knowledge, labelled {SIMULATED_LABEL}"


def web_status(env: ToolEnv) -> tuple[bool, str]:
    provider = configured_provider()
    if provider is None:
        keys = ", ".join(p.key_env for p in WEB_PROVIDERS)
        return False, f"no web search API key: set one of {keys}"
    return True, f"{provider.name} search API (key from {provider.key_env})"


def _checked(query: str) -> str:
    text = query.strip()
    if not text:
        raise ToolArgumentError("ask_search_agent: the query is empty; say what to look up")
    return text[:500]


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 3].rsplit(" ", 1)[0] + "..."


@ask_search_agent.backend("web", check=web_status)
def _search_web(ctx: ToolContext, query: str) -> str:
    text = _checked(query)
    provider = configured_provider()
    if provider is None:  # the key was unset between the availability check and now
        raise ToolArgumentError(f"ask_search_agent: {web_status(ctx.env)[1]}")
    hits = web_search(provider, text)
    if not hits:
        return f'No web results for "{text}".'
    lines = [f'Web search results for "{text}" ({provider.name}):']
    for i, h in enumerate(hits, 1):
        lines.append(f"{i}. {h.title} ({h.url})\n   {_snippet(h.snippet)}")
    return "\n".join(lines)


@ask_search_agent.backend("bm25", check=bm25_status)
def _search_bm25(ctx: ToolContext, query: str) -> str:
    text = _checked(query)
    root = corpus_root(ctx.env)
    index = get_index(root)
    hits = index.search(text, TOP_K)
    which = "bundled corpus" if root == BUNDLED_CORPUS else f"corpus {root.name}"
    if not hits:
        return (
            f'No document in the local search {which} ({len(index.files)} documents) matches "{text}". '
            "Try other keywords, or continue from what you already know."
        )
    lines = [f'Search results for "{text}" (local {which}, {len(hits)} best of {len(index.passages)} passages):']
    for i, h in enumerate(hits, 1):
        lines.append(f"{i}. {h.passage.title} (source: {h.passage.source})\n   {_snippet(h.passage.text)}")
    return "\n".join(lines)


@ask_search_agent.backend("simulated", check=simulated_status)
def _search_simulated(ctx: ToolContext, query: str) -> str:
    from mmat.signatures.tools import SimulatedSearch

    text = _checked(query)
    answer = ctx.predict("ask_search_agent", SimulatedSearch, query=text).answer
    return f"{SIMULATED_LABEL} {answer.strip()}"
