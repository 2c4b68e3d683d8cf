from mmat.testing.fixtures import mmat_home, mmat_settings, offline_env  # noqa: F401
