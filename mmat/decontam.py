"""Benchmark decontamination: drop generated queries that share a word 13-gram with a benchmark query.

13-grams over lower-cased word tokens are the GPT-3 / Llama contamination convention: long enough that
a shared one is no coincidence, short enough to catch a lightly edited copy.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["NGRAM", "ngrams", "NgramIndex"]

NGRAM = 13
_WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class NgramIndex:
    """All n-grams of a benchmark's queries; `contaminated(q)` is True if q shares one."""

    def __init__(self, texts: Iterable[str], n: int = NGRAM):
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        self.n_texts = 0
        for text in texts:
            self.grams |= ngrams(text, n)
            self.n_texts += 1

    def contaminated(self, query: str) -> bool:
        return not self.grams.isdisjoint(ngrams(query, self.n))
