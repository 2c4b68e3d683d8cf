"""Fixtures every test directory may use (mmat_home, mmat_settings, offline_env) come from the package."""

pytest_plugins = ["mmat.testing.fixtures"]
