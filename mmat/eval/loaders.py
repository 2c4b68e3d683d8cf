"""One entry point over the benchmark formats, so the CLI passes a name instead of choosing a function."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from mmat.errors import ConfigError
from mmat.eval.agentx import load_agentx
from mmat.eval.gaia import load_gaia
from mmat.eval.gta import load_gta
from mmat.eval.items import LoadReport
from mmat.eval.store_split import load_store_split

__all__ = ["BENCHES", "Bench", "load_bench"]

Bench = Literal["gta", "gaia", "agentx", "mmat"]
BENCHES: tuple[str, ...] = ("gta", "gaia", "agentx", "mmat")


def load_bench(
    bench: str, path: Path | str | None = None, *, data_dir: Path | str | None = None, store: Any = None,
    split: str = "eval",
) -> LoadReport:
    """gta/gaia/agentx read ``path`` (files relative to ``data_dir``, default the file's folder); mmat reads the store."""
    if bench in ("gta", "gaia", "agentx"):
        if path is None:
            hint = {"gta": "GTA's dataset.json", "gaia": "GAIA's metadata.jsonl", "agentx": "Agent-X's data.json or dataset.json"}[bench]
            raise ConfigError(f"bench {bench} needs a benchmark file: pass the path to {hint}.")
        loader = {"gta": load_gta, "gaia": load_gaia, "agentx": load_agentx}[bench]
        return loader(path, data_dir=data_dir)
    if bench == "mmat":
        if store is None:
            raise ConfigError("bench mmat reads tasks from the store: open one (MMAT_HOME) and pass it.")
        return load_store_split(store, split)
    raise ConfigError(f"unknown bench {bench!r}: choose one of {', '.join(BENCHES)}.")
