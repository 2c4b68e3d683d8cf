"""Imported by the decoding forkserver only (mmat.tools.bounded): warms the decoders once."""

from mmat.tools.bounded import _preload

_preload()
