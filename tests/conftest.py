"""Fixtures every test directory may use (mmat_home, mmat_settings, offline_env) come from the package.

The collection order puts the longest files first. `make test` runs the suite on pytest-xdist workers
with ``--dist loadfile --no-loadscope-reorder``: a file's tests stay on one worker (module fixtures
start servers, Ray, a browser once) and files are handed out in this order, so a file that takes
minutes starts at once instead of being the tail of the run. A serial run only changes order.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["mmat.testing.fixtures"]

# Files measured to take the longest (`--durations`, 2 cores), longest first. Other files with a test marked
# `slow` come next, then the rest; a file keeps its own test order. A name missing here only moves later.
LONGEST_FIRST = (
    "tests/pipeline/test_ray_executor.py",
    "tests/pipeline/test_real_server.py",
    "tests/pipeline/test_kill_resume.py",
    "tests/sandbox/test_both_modes.py",
    "tests/pipeline/test_read_during_synth.py",
    "tests/finetune/test_distributed.py",
    "tests/pipeline/test_interrupt.py",
    "tests/test_packaging.py",
    "tests/pipeline/test_finetune_cli.py",
    "tests/pipeline/test_faults.py",
    "tests/local/test_embedded.py",
    "tests/local/test_provider.py",
    "tests/finetune/test_sft.py",
    "tests/finetune/test_dpo.py",
    "tests/pipeline/test_import.py",
    "tests/view/test_browser.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    files = [item.path.relative_to(config.rootpath).as_posix() if item.path.is_relative_to(config.rootpath) else str(item.path)
             for item in items]
    slow_files = {f for f, item in zip(files, items) if item.get_closest_marker("slow") is not None}

    def file_rank(name: str) -> int:
        return rank.get(name, len(rank) if name in slow_files else len(rank) + 1)

    order = sorted(range(len(items)), key=lambda i: (file_rank(files[i]), i))
    items[:] = [items[i] for i in order]
