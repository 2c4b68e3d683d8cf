"""Tests for mmat.tools (a package, so test module names cannot clash with other folders)."""
