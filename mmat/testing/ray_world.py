"""The scripted synthesis world as a plug-in, for processes the test did not start (Ray workers).

``MMAT_PLUGINS=mmat.testing.ray_world:register`` makes any mmat process register the scripted DummyLMs
``dummy/teacher``, ``dummy/verifier`` and ``dummy/agent``. With ``MMAT_TEST_DIE_ONCE=DIR`` and a file
``DIR/die`` present, the first process to make a teacher call writes ``DIR/died`` and exits at once
(``os._exit``): a worker dying mid-seed, for the retry tests.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["register"]


def register() -> None:
    from mmat.testing import scripted
    from mmat.testing.dummy import DummyLM

    def teacher(messages, fields):
        folder = os.environ.get("MMAT_TEST_DIE_ONCE")
        if folder and (Path(folder) / "die").exists():
            try:
                fd = os.open(Path(folder) / "died", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(17)
        return scripted.teacher(messages, fields)

    DummyLM(teacher, name="teacher")
    DummyLM(scripted.verifier, name="verifier")
    DummyLM(scripted.agent, name="agent")
