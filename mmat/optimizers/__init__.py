"""Prompt compilation: optimize mmat's DSPy programs against metrics built from mmat's own verifiers.

``run_optimize`` compiles one program (query_generator, file_generator, agent, query_file_verifier,
trajectory_verifier) with BootstrapFewShot, MIPROv2 or GEPA on examples selected from the store, and
saves it as DSPy JSON with an mmat header; ``load_compiled`` loads it back into the module or into the
matching stage of ``Synthesis``. ``import_labels`` / ``export_label_sheet`` move human labels, the
ground truth of the verifier metrics, in and out of the store.
"""

from mmat.optimizers.compiled import CompiledHeader, load_compiled, read_header, save_compiled
from mmat.optimizers.datasets import DATASETS, Sets, build_sets, load_examples
from mmat.optimizers.judges import Judge, planned_files
from mmat.optimizers.labels import LABELS, export_label_sheet, import_labels, read_label_file
from mmat.optimizers.metrics import (
    agent_metric,
    file_generator_metric,
    near_duplicate_flags,
    query_generator_metric,
    verifier_agreement,
)
from mmat.optimizers.programs import PROGRAM_NAMES, PROGRAMS, get_program
from mmat.optimizers.runner import OPTIMIZERS, OptimizeSummary, run_optimize
from mmat.optimizers.scoring import Scored, score_program

__all__ = [
    # running an optimization
    "run_optimize",
    "OptimizeSummary",
    "OPTIMIZERS",
    "PROGRAMS",
    "PROGRAM_NAMES",
    "get_program",
    # compiled files
    "load_compiled",
    "save_compiled",
    "read_header",
    "CompiledHeader",
    # data
    "build_sets",
    "load_examples",
    "Sets",
    "DATASETS",
    # metrics and the judge behind them
    "query_generator_metric",
    "file_generator_metric",
    "agent_metric",
    "verifier_agreement",
    "near_duplicate_flags",
    "Judge",
    "planned_files",
    "score_program",
    "Scored",
    # labels
    "import_labels",
    "export_label_sheet",
    "read_label_file",
    "LABELS",
]
