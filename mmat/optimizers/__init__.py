"""Prompt compilation: optimize mmat's DSPy programs against metrics built from mmat's own verifiers.

The pieces an optimization is made of: the programs that can be compiled (query_generator,
file_generator, agent, query_file_verifier, trajectory_verifier), their train/val sets from the store,
the metrics, and compiled files (DSPy JSON with an mmat header; ``load_compiled`` loads one back into
the module or into the matching stage of ``Synthesis``). The run itself (score, compile with
BootstrapFewShot, MIPROv2 or GEPA, score again, save, record) is ``mmat.pipeline.optimize.run_optimize``. ``import_labels`` / ``export_label_sheet`` move human labels, the
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
from mmat.optimizers.scoring import Scored, score_program

__all__ = [
    # what can be optimized
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
