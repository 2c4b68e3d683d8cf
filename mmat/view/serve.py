"""Run the viewer with uvicorn on loopback."""

from __future__ import annotations

from pathlib import Path

from mmat.config import Settings
from mmat.errors import ConfigError, StoreError

__all__ = ["serve", "DEFAULT_PORT"]

DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(settings: Settings, *, port: int = DEFAULT_PORT, host: str = "127.0.0.1", benches: list[Path] | None = None,
          announce=print) -> None:
    """Serve until interrupted. Only loopback: the viewer has no login, and labels write to the store."""
    import uvicorn

    from mmat.view.app import LOOPBACK_HOSTS, create_app

    if host not in _LOOPBACK:
        raise ConfigError(f"mmat view binds to loopback only (127.0.0.1, localhost, ::1), not {host!r}: "
                          "reach it from elsewhere through an SSH tunnel (ssh -L PORT:127.0.0.1:PORT host)")
    if not settings.db_path.exists():
        raise StoreError(f"no store at {settings.db_path}: run `mmat demo` or `mmat synth` first, or set MMAT_HOME.")
    app = create_app(settings, benches=benches, allowed_hosts=LOOPBACK_HOSTS)
    announce(f"mmat view: http://{'[::1]' if host == '::1' else host}:{port}/  (store {settings.db_path}, read-only; Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
