"""The layers import downwards only: cli -> pipeline -> programs / optimizers -> tools, sandbox, store, local,
eval, finetune -> signatures, config, errors, ids (ARCHITECTURE.md, "Layers").

Read from the source (every ``import`` and ``from ... import`` statement, also inside functions), not from
what a test happens to import. Imports under ``if TYPE_CHECKING:`` are annotations, not arrows."""

import ast
import sys
from pathlib import Path

import pytest

import mmat

ROOT = Path(mmat.__file__).parent
UPPER = {"cli", "view", "pipeline"}  # the front ends and the runners behind them
# package -> mmat packages it must never import
FORBIDDEN = {
    "programs": UPPER | {"optimizers"},
    "optimizers": UPPER,
    **{low: UPPER | {"programs", "optimizers"} for low in ("tools", "sandbox", "store", "local", "eval", "finetune")},
    "signatures": UPPER | {"programs", "optimizers", "store", "eval", "finetune"},
}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            if node.module == "mmat":  # from mmat import pipeline
                found += [(node.lineno, f"mmat.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "mmat"]


def _violations(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            parts = name.split(".")
            if len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                out.append(f"{path.relative_to(ROOT.parent)}:{line} imports {name}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package):
    assert _violations(package) == []


def test_the_check_sees_an_arrow_up(tmp_path, monkeypatch):
    """The checker itself: a planted upward import (inside a function) is found; a TYPE_CHECKING one is not."""
    fake = tmp_path / "mmat"
    (fake / "store").mkdir(parents=True)
    (fake / "store" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mmat.programs import SeedResult\n"
        "def f():\n    from mmat.pipeline.synth import run_synth\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    assert _violations("store") == ["mmat/store/bad.py:5 imports mmat.pipeline.synth"]
