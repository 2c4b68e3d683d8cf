"""Tests for mmat.optimizers (package, so module names cannot clash with other test folders)."""
