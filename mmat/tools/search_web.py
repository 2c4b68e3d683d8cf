"""Web search providers for ``ask_search_agent``: used only when the user configured an API key.

The key is read from the environment at call time and only ever sent in the request to its provider;
it never appears in observations, errors or the store. Each provider's endpoint can be pointed
elsewhere (a proxy, a test server) with ``<PROVIDER>_BASE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmat.errors import ConfigError
from mmat.tools.errors import ToolError

__all__ = ["WebHit", "WebProvider", "WEB_PROVIDERS", "configured_provider", "web_search"]

TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WebHit:
    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class WebProvider:
    """A search API: where it lives, which variable holds its key, and how to read its answer."""

    name: str
    key_env: str
    base_url: str
    build: Callable[[str, str, str, int], dict[str, Any]]  # (base_url, key, query, n) -> requests kwargs
    parse: Callable[[dict[str, Any]], list[WebHit]]

    @property
    def url_env(self) -> str:
        return f"{self.name.upper()}_BASE_URL"

    def url(self) -> str:
        return os.environ.get(self.url_env, self.base_url).rstrip("/")


def _tavily_request(base: str, key: str, query: str, n: int) -> dict[str, Any]:
    return {"method": "POST", "url": f"{base}/search", "json": {"query": query, "max_results": n},
            "headers": {"Authorization": f"Bearer {key}"}}


def _tavily_parse(data: dict[str, Any]) -> list[WebHit]:
    return [WebHit(r.get("title", ""), r.get("url", ""), r.get("content", "")) for r in data.get("results", [])]


def _brave_request(base: str, key: str, query: str, n: int) -> dict[str, Any]:
    return {"method": "GET", "url": f"{base}/res/v1/web/search", "params": {"q": query, "count": n},
            "headers": {"X-Subscription-Token": key, "Accept": "application/json"}}


def _brave_parse(data: dict[str, Any]) -> list[WebHit]:
    results = (data.get("web") or {}).get("results", [])
    return [WebHit(r.get("title", ""), r.get("url", ""), r.get("description", "")) for r in results]


def _serpapi_request(base: str, key: str, query: str, n: int) -> dict[str, Any]:
    return {"method": "GET", "url": f"{base}/search.json", "params": {"q": query, "num": n, "engine": "google", "api_key": key}}


def _serpapi_parse(data: dict[str, Any]) -> list[WebHit]:
    return [WebHit(r.get("title", ""), r.get("link", ""), r.get("snippet", "")) for r in data.get("organic_results", [])]


WEB_PROVIDERS: tuple[WebProvider, ...] = (
    WebProvider("tavily", "TAVILY_API_KEY", "https://api.tavily.com", _tavily_request, _tavily_parse),
    WebProvider("brave", "BRAVE_SEARCH_API_KEY", "https://api.search.brave.com", _brave_request, _brave_parse),
    WebProvider("serpapi", "SERPAPI_API_KEY", "https://serpapi.com", _serpapi_request, _serpapi_parse),
)


def configured_provider() -> WebProvider | None:
    """The first provider whose key variable is set (non-empty)."""
    return next((p for p in WEB_PROVIDERS if os.environ.get(p.key_env, "").strip()), None)


def web_search(provider: WebProvider, query: str, n: int = 5) -> list[WebHit]:
    """Top ``n`` hits from ``provider``; a rejected key is a ConfigError, an outage a ToolError."""
    import requests

    key = os.environ.get(provider.key_env, "").strip()
    request = provider.build(provider.url(), key, query, n)
    try:
        response = requests.request(timeout=TIMEOUT_S, **request)
    except requests.RequestException as e:
        raise ToolError(f"ask_search_agent: web search ({provider.name}) could not be reached ({type(e).__name__}); try again later") from None
    if response.status_code in (401, 403):
        raise ConfigError(
            f"{provider.name} rejected the key in {provider.key_env} (HTTP {response.status_code}): set a valid key, "
            "or set MMAT_SEARCH_BACKEND=bm25 to search the local corpus instead"
        )
    if response.status_code != 200:
        raise ToolError(f"ask_search_agent: web search ({provider.name}) failed with HTTP {response.status_code}; try again later")
    try:
        data = response.json()
    except ValueError:
        raise ToolError(f"ask_search_agent: web search ({provider.name}) returned a response that is not JSON") from None
    return provider.parse(data)[:n]
