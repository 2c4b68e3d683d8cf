"""Making model-controlled text safe to show: to the model, in the store and on a terminal.

Sandboxed code controls its printed output, its exception messages, tool arguments and file names.
ANSI escape sequences in them could rewrite a user's terminal (or hide text from a person reading a
trajectory), bidirectional overrides can make text read differently than it is stored, and lone
surrogates (possible in JSON that sandboxed code writes on its channel) break UTF-8 encoding
further on. Every such character is replaced by a visible escape (``\\x1b``, ``\\u202e``); newlines
and tabs stay.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["escape_text", "escape_value", "scrub_surrogates", "nesting_depth"]

# C0 controls except \t and \n, DEL, C1 controls, bidi embeddings/overrides/isolates, the line and
# paragraph separators, BOM/zero-width no-break space and surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
_MAX_DEPTH = 20


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_text(text: str) -> str:
    """``text`` with every control/bidi/surrogate character written as a visible escape."""
    return _UNSAFE.sub(_visible, text)


def escape_value(value: Any, depth: int = 0) -> Any:
    """escape_text on every string (keys included) of a JSON-like value; deeper than 20 levels -> its repr."""
    if isinstance(value, str):
        return escape_text(value)
    if depth >= _MAX_DEPTH:
        return escape_text(repr(value)[:10_000])
    if isinstance(value, list):
        return [escape_value(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {escape_text(str(k)): escape_value(v, depth + 1) for k, v in value.items()}
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub_surrogates(value: Any) -> Any:
    """A JSON-like value with lone surrogates replaced by U+FFFD (what a tool gets: valid text only)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [scrub_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    return value


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists/dicts nest in value (iterative; stops counting past limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest
