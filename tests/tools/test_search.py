"""ask_search_agent: bm25 over the bundled and a custom corpus, the simulated backend, web over loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mmat.errors import ConfigError
from mmat.tools import SIMULATED_LABEL, ToolError, ToolUnavailableError
from mmat.tools.search_index import BUNDLED_CORPUS, corpus_files, get_index


def _search(host, query: str) -> str:
    return host.call("ask_search_agent", {"query": query})


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("At what temperature does water boil on Mount Everest?", "boiling-and-altitude.md"),
        ("how many keys does a piano have", "piano.md"),
        ("standard guitar tuning strings", "guitar.md"),
        ("which plastic recycling code is polystyrene", "plastic-recycling-codes.md"),
        ("legal minimum tread depth", "car-tyres.md"),
        ("how long does a full cycle of moon phases take", "moon-phases.md"),
    ],
)
def test_bm25_finds_the_right_bundled_document(make_host, query, source):
    out = _search(make_host(), query)
    first = out.splitlines()[1]
    assert first.startswith("1. ") and f"(source: {source})" in first, out[:300]


def test_bundled_corpus_is_a_few_dozen_docs():
    files = corpus_files(BUNDLED_CORPUS)
    assert 30 <= len(files) <= 80
    assert all(f.read_text().startswith("# ") for f in files)


def test_no_match_says_so(make_host):
    out = _search(make_host(), "xylophone quasar zeppelin")
    assert out.startswith('No document in the local search bundled corpus (40 documents) matches "xylophone quasar zeppelin".')


def test_custom_corpus_is_indexed_once_and_rebuilt_when_it_changes(make_host, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "lighthouse.md").write_text("# Lighthouse keeping\n\nThe Eddystone lighthouse stands on rocks off Plymouth.")
    (corpus / "notes.txt").write_text("Shopping\n\nBuy oat milk and lentils.")
    host = make_host(search_corpus=corpus, search_backend="bm25")
    out = _search(host, "Eddystone lighthouse")
    assert "1. Lighthouse keeping (source: lighthouse.md)" in out and "off Plymouth" in out
    assert "lentils" not in out
    index = get_index(corpus)
    assert get_index(corpus) is index  # cached
    (corpus / "ferries.md").write_text("# Ferries\n\nFerries to Roscoff leave Plymouth daily.")
    assert "source: ferries.md" in _search(host, "Roscoff ferry")
    assert get_index(corpus) is not index


def test_missing_custom_corpus_is_reported(make_host, tmp_path):
    host = make_host(search_corpus=tmp_path / "nowhere", search_backend="bm25", names=["ask_search_agent"])
    with pytest.raises(ToolUnavailableError, match="search_corpus .*nowhere is not a directory"):
        _search(host, "anything")


def test_simulated_search_is_always_labelled(make_host, scripted_lm):
    dummy, lm = scripted_lm([{"answer": "The Eiffel Tower is 330 m tall."}])
    out = _search(make_host(lm=lm, search_backend="simulated"), "height of the Eiffel Tower")
    assert out == f"{SIMULATED_LABEL} The Eiffel Tower is 330 m tall."
    assert "height of the Eiffel Tower" in str(dummy.calls[0].messages)
    with pytest.raises(ToolUnavailableError, match="simulated: needs a text model"):
        _search(make_host(search_backend="simulated", names=["ask_search_agent"]), "x")


class _FakeTavily(BaseHTTPRequestHandler):
    """A loopback stand-in for the Tavily API: records requests, answers in Tavily's format."""

    requests: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        payload = {"results": [{"title": "Eiffel Tower - facts", "url": "https://example.org/eiffel",
                                "content": "The tower is 330 metres tall."}]}
        data = json.dumps(payload).encode() if self.status == 200 else b"{}"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def tavily(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeTavily)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeTavily.requests, _FakeTavily.status = [], 200
    monkeypatch.setenv("TAVILY_API_KEY", "test-key-not-a-secret")
    monkeypatch.setenv("TAVILY_BASE_URL", f"http://127.0.0.1:{server.server_port}")
    yield _FakeTavily
    server.shutdown()
    server.server_close()


def test_web_backend_is_used_by_auto_when_a_key_is_set(make_host, tavily):
    host = make_host()
    assert [r.backend for r in host.status() if r.tool == "ask_search_agent" and r.active] == ["web"]
    out = _search(host, "height of the Eiffel Tower")
    assert out == (
        'Web search results for "height of the Eiffel Tower" (tavily):\n'
        "1. Eiffel Tower - facts (https://example.org/eiffel)\n   The tower is 330 metres tall."
    )
    assert tavily.requests == [{"path": "/search", "auth": "Bearer test-key-not-a-secret",
                                "body": {"query": "height of the Eiffel Tower", "max_results": 5}}]
    assert "test-key" not in out


def test_web_errors(make_host, tavily):
    tavily.status = 401
    with pytest.raises(ConfigError, match="tavily rejected the key in TAVILY_API_KEY \\(HTTP 401\\)") as err:
        _search(make_host(), "x")
    assert "test-key" not in str(err.value)
    tavily.status = 503
    with pytest.raises(ToolError, match="failed with HTTP 503"):
        _search(make_host(), "x")


def test_web_search_without_a_key_is_unavailable(make_host):
    with pytest.raises(ToolUnavailableError, match="web: no web search API key: set one of TAVILY_API_KEY"):
        _search(make_host(search_backend="web", names=["ask_search_agent"]), "x")
