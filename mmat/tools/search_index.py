"""A BM25 index over a directory of markdown/text files, built once per corpus and process.

Files are split into passages of about :data:`PASSAGE_CHARS` characters at paragraph boundaries, so
a hit in a long document shows the paragraph that matched. The cache key is a fingerprint of the
corpus (relative paths, sizes, mtimes): editing a file rebuilds the index on the next query.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError

__all__ = ["Passage", "SearchHit", "CorpusIndex", "corpus_files", "get_index", "BUNDLED_CORPUS", "CORPUS_SUFFIXES"]

BUNDLED_CORPUS = Path(__file__).resolve().parent.parent / "assets" / "search_corpus"
CORPUS_SUFFIXES = (".md", ".markdown", ".txt")
PASSAGE_CHARS = 1200
MIN_RELATIVE_SCORE = 0.35  # hits scoring under this share of the best hit are noise (a shared common word)
MAX_FILE_BYTES = 2_000_000  # bigger files are skipped: a search corpus is prose, not data dumps

_indexes: dict[tuple[Path, tuple], CorpusIndex] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Passage:
    source: str  # path relative to the corpus root
    title: str
    text: str


@dataclass(frozen=True)
class SearchHit:
    passage: Passage
    score: float


def corpus_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES and p.stat().st_size <= MAX_FILE_BYTES
    )


def _title(text: str, path: Path) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip() or path.stem
    return path.stem


def _passages(text: str, source: str, title: str) -> list[Passage]:
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    if paragraphs and paragraphs[0].lstrip("#").strip() == title:
        paragraphs = paragraphs[1:]  # the title is prepended to every passage below
    chunks, current = [], ""
    for para in paragraphs:
        if current and len(current) + len(para) > PASSAGE_CHARS:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return [Passage(source, title, chunk) for chunk in chunks]


class CorpusIndex:
    """Passages of one corpus and their BM25 index (bm25s, English stopwords, Snowball stemmer)."""

    def __init__(self, root: Path) -> None:
        import bm25s
        import Stemmer

        self.root = root
        self.passages: list[Passage] = []
        self.files = corpus_files(root)
        for path in self.files:
            text = path.read_text(encoding="utf-8", errors="replace")
            rel = path.relative_to(root).as_posix()
            self.passages.extend(_passages(text, rel, _title(text, path)))
        if not self.passages:
            raise ConfigError(f"search corpus {root} holds no text: add .md or .txt files, or unset MMAT_SEARCH_CORPUS")
        self._stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize([f"{p.title}\n{p.text}" for p in self.passages], stopwords="en",
                                stemmer=self._stemmer, show_progress=False)
        self._bm25: Any = bm25s.BM25()
        self._bm25.index(tokens, show_progress=False)

    def search(self, query: str, k: int = 3) -> list[SearchHit]:
        """Best ``k`` passages, best first; weak hits (under MIN_RELATIVE_SCORE of the best) and zero scores are dropped."""
        import bm25s

        query_tokens = bm25s.tokenize([query], stopwords="en", stemmer=self._stemmer, show_progress=False, return_ids=False)
        if not query_tokens[0]:
            return []
        ids, scores = self._bm25.retrieve(query_tokens, k=min(k, len(self.passages)), show_progress=False)
        best = float(scores[0][0]) if len(scores[0]) else 0.0
        return [
            SearchHit(self.passages[int(i)], float(s))
            for i, s in zip(ids[0], scores[0])
            if s > 0 and s >= MIN_RELATIVE_SCORE * best
        ]


def _fingerprint(root: Path) -> tuple:
    return tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in corpus_files(root))


def get_index(root: Path) -> CorpusIndex:
    """The cached index of ``root``, rebuilt when the corpus's files change."""
    root = root.resolve()
    key = (root, _fingerprint(root))
    with _lock:
        if key not in _indexes:
            for stale in [k for k in _indexes if k[0] == root]:
                del _indexes[stale]
            _indexes[key] = CorpusIndex(root)
        return _indexes[key]
