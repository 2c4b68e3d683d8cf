"""Tests for mmat.eval (a package, so test module names cannot clash with other folders)."""
