"""The public API: every curated name resolves and is documented; every package declares __all__."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import mmat


def test_every_public_name_resolves_and_has_a_docstring():
    missing, undocumented = [], []
    for name in mmat.__all__:
        if name == "__version__":
            continue
        try:
            value = getattr(mmat, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{name}: {e}")
            continue
        if not (getattr(value, "__doc__", None) or "").strip():
            undocumented.append(name)
    assert not missing, missing
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_every_package_declares_all_and_its_names_exist():
    problems = []
    for info in pkgutil.walk_packages(mmat.__path__, "mmat."):
        if not info.ispkg:
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        if names is None:
            problems.append(f"{info.name}: no __all__")
            continue
        problems += [f"{info.name}.{n}: listed in __all__ but missing" for n in names if not hasattr(module, n)]
    assert not problems, problems


def test_import_mmat_is_cheap_and_lists_the_api():
    out = subprocess.run([sys.executable, "-c", "import sys, mmat; print(len(mmat.__all__)); "
                          "print('dspy' in sys.modules, 'torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    count, heavy = out.stdout.split("\n")[:2]
    assert int(count) == len(mmat.__all__) > 50
    assert heavy == "False False"  # names load on first use
