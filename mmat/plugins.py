"""Extending mmat from your own package: tools, tool backends, model providers, benchmark loaders.

A plug-in is a Python module that registers things through mmat's public hooks when it is imported —
``@mmat.tools.tool`` and ``Tool.backend`` for tools, ``mmat.lm.register_provider`` (a litellm
``CustomLLM`` and the ``ModelCapabilities`` of its models, as ``mmat.lm`` does for ``local/`` and
``mmat.testing`` for ``dummy/``) for model providers. mmat finds plug-ins two ways:

- **entry points** in the group ``mmat.plugins`` of any installed distribution::

      [project.entry-points."mmat.plugins"]
      my_tools = "my_package.mmat_tools"          # a module, imported
      my_setup = "my_package.setup:register"      # or a callable, imported and called with no arguments

- **``MMAT_PLUGINS``**: comma-separated import paths (same forms), for code that is not installed —
  ``MMAT_PLUGINS=my_tools,lab.extra:register mmat synth --tools my_tool``.

``load_plugins()`` runs once per process (the CLI calls it at start-up; the tool catalog calls it
before it lists tools and ``mmat.lm.configure_litellm`` before it builds models, so Python users get
plug-ins too). A plug-in that fails to import stops
everything with one error naming it — a silently missing tool would change what a run makes.
"""

from __future__ import annotations

import importlib
import os
import threading
from importlib import metadata

from mmat.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "Plugin", "load_plugins", "loaded_plugins"]

ENTRY_POINT_GROUP = "mmat.plugins"
PLUGINS_ENV = "MMAT_PLUGINS"

_lock = threading.RLock()
_loaded: dict[str, "Plugin"] = {}
_env_seen: str | None = None
_entry_points_done = False


class Plugin:
    """One loaded plug-in: its import path and where it was named (entry point or MMAT_PLUGINS)."""

    def __init__(self, target: str, origin: str):
        self.target, self.origin = target, origin

    def __repr__(self) -> str:
        return f"Plugin({self.target!r}, origin={self.origin!r})"


def _load(target: str, origin: str) -> None:
    if target in _loaded:
        return
    module_name, _, attr = target.partition(":")
    # Mark first: a plug-in that imports mmat.tools must not re-enter its own loading.
    _loaded[target] = Plugin(target, origin)
    try:
        module = importlib.import_module(module_name)
        if attr:
            hook = module
            for part in attr.split("."):
                hook = getattr(hook, part)
            hook()
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported with its name, then stops
        del _loaded[target]
        raise ConfigError(f"mmat plug-in {target!r} ({origin}) failed to load: {type(e).__name__}: {e}. Fix or "
                          f"uninstall it, or remove it from {PLUGINS_ENV}.") from e


def load_plugins() -> list[Plugin]:
    """Import every plug-in named by an entry point or by ``MMAT_PLUGINS`` (each once); return them all."""
    global _env_seen, _entry_points_done
    with _lock:
        if not _entry_points_done:
            _entry_points_done = True
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                _load(ep.value, f"entry point {ep.name!r} of {ep.dist.name if ep.dist else 'an installed package'}")
        env = os.environ.get(PLUGINS_ENV, "")
        if env != _env_seen:
            _env_seen = env
            for target in (t.strip() for t in env.split(",")):
                if target:
                    _load(target, PLUGINS_ENV)
        return list(_loaded.values())


def loaded_plugins() -> list[Plugin]:
    with _lock:
        return list(_loaded.values())
