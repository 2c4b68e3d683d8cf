"""Tests for mmat.finetune (a package, so test module names cannot clash with other folders)."""
