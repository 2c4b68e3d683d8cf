"""Fakes that ship with mmat, registered through the real mechanisms (a litellm provider), for tests.

Importing this package registers the ``dummy`` provider (``mmat.lm.register_provider``, the hook a
plug-in uses); ``MMAT_PLUGINS=mmat.testing`` does it in a process a test did not start.

``DummyLM(responses, name="t")`` then ``mmat.lm.build_lm("dummy/t")`` gives a real ``dspy.LM`` whose
answers come from the script. Fixtures: ``pytest_plugins = ["mmat.testing.fixtures"]``.
"""

from mmat.testing.dummy import DUMMY_PREFIX, DummyCall, DummyExhaustedError, DummyLM, DummyProvider, get_dummy, output_fields

__all__ = ["DummyLM", "DummyCall", "DummyExhaustedError", "DummyProvider", "get_dummy", "output_fields", "DUMMY_PREFIX"]
