"""ToolAcc and CodeExec definitions, edge cases included."""

import pytest

from mmat.eval.codeexec import code_exec
from mmat.eval.toolacc import tool_acc


def test_partial_overlap_gives_set_precision_and_recall():
    s = tool_acc(["ocr", "visualizer", "ocr"], ["ocr", "objectlocation"])
    assert (s.precision, s.recall, s.exact) == (0.5, 0.5, False)


def test_order_and_repetition_are_ignored():
    s = tool_acc(["visualizer", "ocr", "ocr"], ["ocr", "visualizer"])
    assert (s.precision, s.recall, s.exact) == (1.0, 1.0, True)


def test_final_answer_is_ignored_on_both_sides():
    s = tool_acc(["ocr", "final_answer"], ["ocr"])
    assert s.exact and s.precision == 1.0


def test_both_empty_is_perfect():
    s = tool_acc(["final_answer"], [])
    assert (s.precision, s.recall, s.exact) == (1.0, 1.0, True)


@pytest.mark.parametrize(("called", "gold"), [([], ["ocr"]), (["ocr"], [])])
def test_one_side_empty_scores_zero(called, gold):
    s = tool_acc(called, gold)
    assert (s.precision, s.recall, s.exact) == (0.0, 0.0, False)


def test_superset_has_full_recall_but_not_exact():
    s = tool_acc(["ocr", "visualizer", "image_edit"], ["ocr"])
    assert s.recall == 1.0 and s.precision == pytest.approx(1 / 3) and not s.exact


def test_code_exec_share_and_no_steps():
    assert code_exec(4, 1) == 0.75
    assert code_exec(0, 0) is None
    with pytest.raises(ValueError):
        code_exec(1, 2)


def test_gta_map_targets_are_real_mmat_tools():
    from mmat.eval.toolmap import GTA_TOOL_MAP, IGNORED_AGENT_TOOLS
    from mmat.tools import TOOL_NAMES

    targets = {name for name in GTA_TOOL_MAP.values() if name is not None}
    assert targets <= set(TOOL_NAMES)
    assert IGNORED_AGENT_TOOLS <= set(TOOL_NAMES)
    assert len(GTA_TOOL_MAP) == 14  # GTA's whole tool set is mapped
